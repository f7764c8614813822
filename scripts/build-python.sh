#!/usr/bin/env bash
# A newer CPython than Debian 12's 3.11, for the ansible-core versions whose controller
# needs one (2.20 wants Python >= 3.12; tests/ansible-versions.sh). Debian 12 has no
# package of it and the machines here reach only the package registries, so this builds
# it from the upstream source that Debian 13 (trixie) ships: apt-get source fetches the
# orig tarball, checked against trixie's signed index, through a private apt
# configuration that leaves the machine's own sources alone. Idempotent; a few minutes
# on two cores the first time.
#
#   scripts/build-python.sh PREFIX     prints PREFIX/bin/python3.13 when it is ready
#
# The build needs a C compiler and the -dev packages that scripts/setup.sh installs.
set -euo pipefail

version=3.13
prefix=${1:?usage: scripts/build-python.sh PREFIX}
python=$prefix/bin/python$version

# The modules ansible-test and pip need, so a build that missed one is made again.
usable() {
    "$python" -c 'import ssl, ctypes, zlib, bz2, lzma, sqlite3, venv, ensurepip' 2>/dev/null
}

if usable; then
    echo "$python"
    exit 0
fi

work=$(mktemp -d /tmp/ferry-build-python.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/source"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    > "$work/apt/sources.list"
apt=(apt-get -q -o "Dir::Etc::SourceList=$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache" -o APT::Sandbox::User=root)
echo "build-python.sh: fetching the python$version source from Debian 13" >&2
"${apt[@]}" update >/dev/null
(cd "$work/source" && "${apt[@]}" source --download-only "python$version" >/dev/null)

orig=$(echo "$work"/source/python"$version"_*.orig.tar.xz)
[ -f "$orig" ] || { echo "build-python.sh: apt-get source python$version brought no orig tarball" >&2; exit 1; }
tar -C "$work/source" -xJf "$orig"
cd "$work"/source/Python-"$version".*/

echo "build-python.sh: building $(basename "$orig" .orig.tar.xz) into $prefix" >&2
# No --enable-optimizations: the profile-guided build takes far longer and test venvs do
# not need the speed.
./configure -q --prefix="$prefix" --with-ensurepip=install >"$work/configure.log" 2>&1 \
    || { tail -20 "$work/configure.log" >&2; exit 1; }
make -s -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -40 "$work/make.log" >&2; exit 1; }
rm -rf "$prefix"
make -s altinstall >"$work/install.log" 2>&1 || { tail -20 "$work/install.log" >&2; exit 1; }
if ! usable; then
    echo "build-python.sh: $python lacks a module ansible-test needs (ssl, ctypes, zlib, bz2, lzma, sqlite3)" >&2
    exit 1
fi
echo "$python"
