#!/usr/bin/env bash
# Everything Ferry needs on a fresh Debian 12 machine (run as root), idempotent:
# Debian packages (the benchmarks' anchors among them), a venv in .venv with Ansible
# and the engine (which builds the built-in guest), the Linux test guest, and this
# checkout made visible to Ansible as ferry.hypervisor.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

packages=(
    openssh-server openssh-client cron iproute2 iputils-ping procps psmisc util-linux
    gcc make binutils python3 python3-venv python3-dev
    busybox-static cpio gzip lz4 zstd
    # The benchmarks' anchors, which the test suite's smoke runs measure (bench/README.md):
    # QEMU (qemu-system-x86_64), a static libc for the migration guest's /init, file, iperf3.
    qemu-system-x86 libc6-dev file iperf3
    # ansible-test sanity's shellcheck test, which passes without a word where shellcheck is missing.
    shellcheck
    # What scripts/build-python.sh needs to build the Python 3.13 of ansible-core 2.20's controller
    # (tests/ansible-versions.sh) with the modules ansible-test and pip use.
    xz-utils libssl-dev libffi-dev zlib1g-dev libbz2-dev liblzma-dev libsqlite3-dev uuid-dev
)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${FERRY_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check -e engine
scripts/link-collection.sh >/dev/null
# The Linux test guest (Debian's cloud kernel + a busybox initramfs); skips itself when built.
engine/guests/linux/build.sh >/dev/null
echo "setup: ready ($(.venv/bin/ferry --help >/dev/null && echo ferry) $(.venv/bin/ansible --version | head -1))"
