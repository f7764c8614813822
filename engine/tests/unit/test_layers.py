"""The engine's layers, bottom up: a module never imports from a layer above its own."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ferry"
LAYERS = ["errors", "inputs", "layout", "kvm", "memory", "boot", "devices", "guests", "machine", "snapshot",
          "migration", "runtime", "lab", "cli"]


STRING_IMPORT = re.compile(r"ferry(\.[a-z_][a-z0-9_]*)+")


def layer_of(module: str) -> int:
    return LAYERS.index(module.split(".")[0]) if module.split(".")[0] in LAYERS else -1


def imports_of(path: Path) -> set[str]:
    """Engine modules named by ``path``'s imports, as paths below the package."""
    here = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[:-node.level]) if len(here) >= node.level else []
                target = base + (node.module.split(".") if node.module else [])
                names = [".".join(target)] if node.module else [".".join(target + [a.name]) for a in node.names]
            elif node.module and node.module.startswith("ferry."):
                names = [node.module[len("ferry."):]]
            else:
                continue
            found.update(n for n in names if n)
        elif isinstance(node, ast.Import):
            found.update(a.name[len("ferry."):] for a in node.names if a.name.startswith("ferry."))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and STRING_IMPORT.fullmatch(node.value):
            # importlib.import_module("ferry.x") and "python -m ferry.x" name modules too.
            found.add(node.value[len("ferry."):])
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path):
    own = layer_of(".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    higher = sorted(m for m in imports_of(path) if layer_of(m) > own)
    assert not higher, f"{path.relative_to(PACKAGE)} (layer {LAYERS[own]}) imports {higher}"


def test_string_and_plain_imports_are_seen():
    assert "runtime.commands" in imports_of(PACKAGE / "cli.py")          # importlib.import_module("ferry...")
    assert "runtime.vmproc" in imports_of(PACKAGE / "runtime" / "host.py")  # python -m ferry.runtime.vmproc
