#!/usr/bin/env bash
# ansible-test units and sanity on each ansible-core minor version the collection
# claims (meta/runtime.yml: requires_ansible '>=2.15.0'; 2.15 to 2.20). Each version's
# ansible-test comes from a venv of its own under ~/.cache/ferry-hypervisor/ansible-core-X.Y,
# made on first use with pip (the checkout's .venv serves the version it has). Up to 2.19
# the venv and the tests run on Debian 12's Python 3.11; 2.20's controller needs Python
# 3.12 or newer, which Debian 12 lacks, so its venv and tests run on a Python 3.13 that
# scripts/build-python.sh builds from Debian 13's source on first use (a few minutes).
#
#   tests/ansible-versions.sh [--units VERSIONS] [--sanity VERSIONS]
#
# VERSIONS is a comma-separated list, "all" (the default for both) or "" (none);
# --list prints the claimed versions. The test suite runs units on all of them and
# sanity on the oldest (tests/sanity/test_ansible_versions.py) and the newest
# (tests/sanity/test_sanity.py); a full run here takes a few minutes more.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
versions=(2.15 2.16 2.17 2.18 2.19 2.20)
# The first ansible-core whose controller needs a newer Python than Debian 12's.
newer_python_from=2.20
newer_python=3.13
cache=${FERRY_ANSIBLE_VERSIONS_DIR:-$HOME/.cache/ferry-hypervisor}
units=all
sanity=all

while (($#)); do
    if [[ $1 = --units || $1 = --sanity ]] && (($# < 2)); then
        echo "ansible-versions.sh: $1 needs a list of versions" >&2
        exit 2
    fi
    case $1 in
        --units) units=$2; shift 2 ;;
        --sanity) sanity=$2; shift 2 ;;
        --list) echo "${versions[*]}"; exit 0 ;;
        *) echo "ansible-versions.sh: unknown argument $1 (--units VERSIONS, --sanity VERSIONS, --list)" >&2; exit 2 ;;
    esac
done

# The versions a list names, each checked against the claimed ones.
selected() {
    local list=$1 version
    if [ "$list" = all ]; then list=$(IFS=,; echo "${versions[*]}"); fi
    [ -z "$list" ] && return 0
    for version in ${list//,/ }; do
        if [[ " ${versions[*]} " != *" $version "* ]]; then
            echo "ansible-versions.sh: $version is not a claimed ansible-core version (${versions[*]})" >&2
            return 2
        fi
        echo "$version"
    done
}

# The Python version (X.Y) that runs an ansible-core minor version's controller and tests.
python_version() {
    if [ "$(printf '%s\n' "$1" "$newer_python_from" | sort -V | head -1)" = "$newer_python_from" ]; then
        echo "$newer_python"
    else
        echo 3.11
    fi
}

# The interpreter of a Python version: Debian's 3.11, or the one built under the cache.
python_of() {
    if [ "$1" = "$newer_python" ]; then
        "$root/scripts/build-python.sh" "$cache/python-$1"
    else
        command -v "python$1"
    fi
}

# The ansible-test of one ansible-core minor version.
ansible_test() {
    local version=$1 venv
    if "$root/.venv/bin/ansible-test" --version 2>/dev/null | grep -q "^ansible-test version $version\."; then
        echo "$root/.venv/bin/ansible-test"
        return
    fi
    venv=$cache/ansible-core-$version
    if ! "$venv/bin/ansible-test" --version 2>/dev/null | grep -q "^ansible-test version $version\."; then
        echo "ansible-versions.sh: making $venv" >&2
        rm -rf "$venv"
        "$(python_of "$(python_version "$version")")" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "ansible-core==$version.*" >&2
    fi
    echo "$venv/bin/ansible-test"
}

unit_versions=$(selected "$units")
sanity_versions=$(selected "$sanity")
failed=()
for version in "${versions[@]}"; do
    for command in units sanity; do
        list=$unit_versions
        [ "$command" = sanity ] && list=$sanity_versions
        grep -qx "$version" <<<"$list" || continue
        echo "=== ansible-core $version: $command"
        python=$(python_version "$version")
        # ansible-test finds the interpreter of --python by its name, pythonX.Y, on PATH.
        if ! interpreter=$(python_of "$python") || ! test=$(ansible_test "$version") ||
            ! PATH=$(dirname "$interpreter"):$PATH ANSIBLE_TEST=$test FERRY_TEST_PYTHON=$python \
                "$root/tests/ansible-test.sh" "$command"; then
            failed+=("$version $command")
        fi
    done
done
if ((${#failed[@]})); then
    printf 'ansible-versions.sh: FAILED: %s\n' "${failed[@]}"
    exit 1
fi
# The lists, one version a line, joined by spaces.
echo "ansible-versions.sh: passed: units on $(echo "$unit_versions" | xargs), sanity on $(echo "$sanity_versions" | xargs)"
