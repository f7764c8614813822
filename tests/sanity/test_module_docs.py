"""The modules' documentation as ansible-doc shows it: every module of the action group carries
the attributes a user looks for (check_mode, diff_mode, action_group, platform), and what is the
same for several modules comes from the doc fragment plugins/doc_fragments/attributes.py instead
of being written again in each module (validate-modules checks the schema, in test_sanity.py)."""

import ast
import json
import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODULES = yaml.safe_load(open(os.path.join(ROOT, "meta", "runtime.yml")))["action_groups"]["ferry"]


def own_documentation(module):
    """The module's DOCUMENTATION as written in its file, before any fragment is added."""
    with open(os.path.join(ROOT, "plugins", "modules", f"{module}.py")) as handle:
        tree = ast.parse(handle.read())
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and [getattr(target, "id", None) for target in node.targets] == ["DOCUMENTATION"]]
    return yaml.safe_load(ast.literal_eval(value))


@pytest.fixture(scope="module")
def shown():
    """ansible-doc --json of every module, through the checkout's link (scripts/link-collection.sh)."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "--json",
                           *[f"ferry.hypervisor.{module}" for module in MODULES]], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return {name.rsplit(".", 1)[1]: entry["doc"] for name, entry in json.loads(proc.stdout).items()}


@pytest.mark.parametrize("module", MODULES)
def test_each_module_shows_the_attributes_users_look_for(shown, module):
    attributes = shown[module]["attributes"]

    assert attributes["action_group"]["membership"] == ["ferry.hypervisor.ferry"], attributes
    assert attributes["platform"]["platforms"] == "linux" and attributes["platform"]["support"] == "full"
    for mode in ("check_mode", "diff_mode"):
        assert attributes[mode]["support"] in ("full", "partial", "none") and attributes[mode]["description"]


def test_no_attribute_is_written_the_same_in_two_modules():
    seen = {}
    for module in MODULES:
        for key, value in (own_documentation(module).get("attributes") or {}).items():
            seen.setdefault((key, json.dumps(value, sort_keys=True)), []).append(module)
    repeated = [(key[0], modules) for key, modules in seen.items() if len(modules) > 1]
    assert not repeated, f"the same attribute written in several modules (a doc fragment's job): {repeated}"
