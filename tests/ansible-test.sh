#!/usr/bin/env bash
# ansible-test (sanity or units) for this collection, on what it ships.
#
# ansible-test needs the collection at .../ansible_collections/ferry/hypervisor,
# so this builds the collection artifact (galaxy.yml's build_ignore leaves out
# the venv, labs, benchmarks and build outputs), unpacks it at such a path under
# a temporary directory and runs there, with each test in its own virtual
# environment (--venv: no docker here) whose requirements ansible-test installs
# from the package index.
#
#   tests/ansible-test.sh sanity|units [more ansible-test arguments, e.g. --test pep8]
#
# ANSIBLE_TEST (default: the checkout's .venv/bin/ansible-test) picks the
# ansible-test, and so the ansible-core version (tests/ansible-versions.sh runs
# each one the collection claims); FERRY_TEST_PYTHON (default 3.11) the Python version.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ansible_test=${ANSIBLE_TEST:-$root/.venv/bin/ansible-test}
python_version=${FERRY_TEST_PYTHON:-3.11}
command=${1:?usage: tests/ansible-test.sh sanity|units [ansible-test arguments]}
shift
case $command in sanity|units) ;; *) echo "ansible-test.sh: runs sanity or units, not $command" >&2; exit 2 ;; esac

work=$(mktemp -d /tmp/ferry-ansible-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
dest=$work/ansible_collections/ferry/hypervisor
mkdir -p "$dest"

"$(dirname "$ansible_test")/ansible-galaxy" collection build --output-path "$work" "$root" >/dev/null
tar -C "$dest" -xzf "$work"/ferry-hypervisor-*.tar.gz
rm -f "$dest/MANIFEST.json" "$dest/FILES.json"

# engine/ is the bundled hypervisor engine: a Python package of its own, with
# its own style, tests and Python 3.11 floor, that Ansible never imports as
# plugin code (the engine role builds a wheel from it). The style checks made
# for plugin code (pep8, pylint, shebang) are skipped for its files. They are
# listed here rather than in an ignore file because the engine's file list
# changes with every engine commit, and a stale entry fails sanity. Each
# ansible-core reads the ignore file of its own minor version.
minor=$("$ansible_test" --version | sed -n 's/^ansible-test version \([0-9]*\.[0-9]*\).*/\1/p')
ignores=$dest/tests/sanity/ignore-$minor.txt
mkdir -p "$(dirname "$ignores")"
(
    cd "$dest"
    find engine -type f -name '*.py' | sort | while read -r path; do
        printf '%s pep8!skip\n%s pylint!skip\n' "$path" "$path"
    done
    find engine -type f | sort | while read -r path; do
        if [ "$(head -c 2 "$path")" = '#!' ]; then printf '%s shebang!skip\n' "$path"; fi
    done
    # Before 2.17, sanity wants Python 2's __future__ and __metaclass__ lines in the unit
    # test modules of modules and module_utils too (not conftest.py, and not the tests of
    # controller plugins, which it does not look at); they run on the controller's Python 3 only
    # (2.17 dropped both tests).
    if [ "$(printf '%s\n' "$minor" 2.16 | sort -V | head -1)" = "$minor" ]; then
        for dir in tests/unit/plugins/modules tests/unit/plugins/module_utils; do
            if [ -d "$dir" ]; then find "$dir" -type f -name 'test_*.py'; fi
        done | sort | while read -r path; do
            printf '%s future-import-boilerplate!skip\n%s metaclass-boilerplate!skip\n' "$path" "$path"
        done
    fi
) >> "$ignores"

# ansible-test bootstraps pip into each venv with get-pip.py, which it downloads
# from a host outside the package registries. Where that file is not cached,
# cache a stand-in that does the same from Python's own ensurepip and the index.
pip_version=$("$(dirname "$ansible_test")/python" -c '
import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="'"$python_version"'"))["pip"])')
get_pip=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
if [ ! -s "$get_pip" ]; then
    mkdir -p "$(dirname "$get_pip")"
    cat > "$get_pip" <<'PY'
"""Stand-in for get-pip.py (written by ferry.hypervisor's tests/ansible-test.sh):
installs pip with ensurepip, then runs pip install with the given arguments."""
import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))
PY
fi

skips=()
if [ "$command" = sanity ] && [ -d "$dest/changelogs" ] && [ ! -f "$dest/changelogs/config.yaml" ]; then
    echo "ansible-test.sh: changelogs/config.yaml is missing (antsibull-changelog init makes it): skipping the changelog test" >&2
    skips+=(--skip-test changelog)
fi

cd "$dest"
"$ansible_test" "$command" --venv --python "$python_version" --color no "${skips[@]}" "$@"
