#!/usr/bin/env bash
# Build the Linux test guest from Debian packages.
#
# usage: build.sh [OUTPUT_DIR]        (default: engine/guests/linux/out)
#
# Writes into OUTPUT_DIR:
#   vmlinuz     Debian's cloud kernel, as shipped (bzImage)
#   vmlinux     the same kernel uncompressed (ELF), for hosts where ring 0
#               runs emulated and decompressing would take many minutes
#   initrd.img  busybox initramfs (gzip'd cpio newc) whose /init ticks on
#               the console and powers off on the ACPI power button
#   cmdline     the recommended kernel command line
# and keeps the downloaded packages in OUTPUT_DIR/debs. Needs apt-get,
# dpkg-deb, python3, gzip and the decompressor of the kernel's payload
# (lz4 for Debian 12's kernel). Does nothing when the outputs are newer
# than the packages and the files next to this script.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$(realpath -m "${1:-$here/out}")
debs=$out/debs
outputs=(vmlinuz vmlinux initrd.img cmdline)

# console=ttyS0                 kernel console on COM1, the VM's console
# earlyprintk=serial,ttyS0,115200  messages from before the serial driver starts
# reboot=k                      reboot through the i8042 (0xfe to port 0x64): the
#                               FADT offers no reset register and there is no port 0xcf9
# panic=-1                      reboot at once on a panic instead of hanging
# pci=off                       there is no PCI host bridge: skip config-space probing
# nomodeset                     no display: no graphics mode setting
# i8042.noaux                   the i8042 has no mouse port: skip probing it
# 8250.nr_uarts=1               only COM1 exists: skip probing COM2-COM4
# tsc=reliable                  trust the TSC: no clocksource watchdog (no HPET or
#                               ACPI PM timer to check it against anyway)
# no_timer_check                skip the test that the PIT timer ticks through the
#                               I/O APIC, which misfires when the guest runs slowly
# nokaslr                       same addresses on every boot; saves the random
#                               placement work of the bzImage decompressor
# cryptomgr.notests             skip the crypto self-tests, slow when ring 0 is emulated
# rdinit=/init                  the initramfs program to run (the default, made explicit)
cmdline="console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=k panic=-1 pci=off nomodeset"
cmdline+=" i8042.noaux 8250.nr_uarts=1 tsc=reliable no_timer_check nokaslr cryptomgr.notests rdinit=/init"

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for tool in apt-cache apt-get dpkg-deb python3 gzip tar; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# The versioned package that linux-image-cloud-amd64 currently depends on.
kernel_package() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n 1
}

# The .deb file name apt-get download writes for the candidate version.
deb_path() {
    local package=$1 version
    version=$(apt-cache show --no-all-versions "$package" 2>/dev/null | sed -n 's/^Version: //p' | head -n 1)
    [ -n "$version" ] || die "no candidate version of $package (run apt-get update)"
    printf '%s/%s_%s_amd64.deb\n' "$debs" "$package" "${version//:/%3a}"
}

download() {
    local deb=$1 package=$2
    if [ ! -s "$deb" ]; then
        log "downloading $package"
        # As root, apt hands the download to its _apt user, who may not be
        # allowed to write here; it then warns and downloads as root anyway.
        local as=()
        [ "$(id -u)" -ne 0 ] || as=(-o APT::Sandbox::User=root)
        (cd "$debs" && apt-get "${as[@]}" download -q "$package" >&2)
        [ -s "$deb" ] || die "apt-get download $package did not produce $deb"
    fi
}

up_to_date() {
    local output input
    for output in "${outputs[@]}"; do
        [ -s "$out/$output" ] || return 1
        for input in "$kernel_deb" "$busybox_deb" "$here/build.sh" "$here/init" "$here"/*.py; do
            [ "$out/$output" -nt "$input" ] || return 1
        done
    done
}

# Atomic: a half-written output never looks up to date.
install_output() {
    mv -f "$1" "$out/$2"
}

build_kernel() {
    local unpacked=$work/kernel
    mkdir -p "$unpacked"
    dpkg-deb --fsys-tarfile "$kernel_deb" |
        tar -x -C "$unpacked" "./boot/vmlinuz-$release" "./lib/modules/$release/kernel/drivers/acpi/button.ko"
    cp "$unpacked/boot/vmlinuz-$release" "$work/vmlinuz"
    python3 "$here/extract-vmlinux.py" "$work/vmlinuz" "$work/vmlinux"
    cp "$unpacked/lib/modules/$release/kernel/drivers/acpi/button.ko" "$work/button.ko"
}

build_initramfs() {
    local root=$work/root applet
    mkdir -p "$work/busybox" "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/lib/modules"
    dpkg-deb --fsys-tarfile "$busybox_deb" | tar -x -C "$work/busybox" ./bin/busybox
    install -m 0755 "$work/busybox/bin/busybox" "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    install -m 0755 "$here/init" "$root/init"
    install -m 0644 "$work/button.ko" "$root/lib/modules/button.ko"
    python3 "$here/mkcpio.py" "$root" "$work/initrd.cpio"
    gzip -n -9 <"$work/initrd.cpio" >"$work/initrd.img"
}

mkdir -p "$debs"
package=$(kernel_package)
[ -n "$package" ] || die "cannot resolve linux-image-cloud-amd64 to a kernel package (run apt-get update)"
release=${package#linux-image-}
kernel_deb=$(deb_path "$package")
busybox_deb=$(deb_path busybox-static)
download "$kernel_deb" "$package"
download "$busybox_deb" busybox-static

if up_to_date; then
    log "up to date ($package)"
else
    log "building from $package and $(basename "$busybox_deb")"
    work=$(mktemp -d "$out/.work.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    build_kernel
    build_initramfs
    printf '%s\n' "$cmdline" >"$work/cmdline"
    for output in "${outputs[@]}"; do
        install_output "$work/$output" "$output"
    done
fi

for output in "${outputs[@]}"; do
    printf '%-11s %9s bytes  %s\n' "$output" "$(stat -c %s "$out/$output")" "$out/$output"
done
