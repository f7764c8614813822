#!/usr/bin/env bash
# Make this checkout resolvable as the collection ferry.hypervisor:
# collections/ansible_collections/ferry/hypervisor -> the checkout (ansible.cfg
# puts ./collections on the collections path). Safe to run again.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
parent=$root/collections/ansible_collections/ferry
link=$parent/hypervisor
target=../../..

mkdir -p "$parent"
if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then
    exit 0
fi
if [ -e "$link" ] && [ ! -L "$link" ]; then
    echo "link-collection.sh: $link exists and is not a symlink; remove it first" >&2
    exit 1
fi
ln -sfn "$target" "$link"
echo "linked $link -> $root"
