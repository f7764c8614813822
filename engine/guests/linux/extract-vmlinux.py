#!/usr/bin/env python3
"""Write the uncompressed ELF kernel that a bzImage carries.

usage: extract-vmlinux.py BZIMAGE OUTPUT

Where the kernel's own scripts/extract-vmlinux scans the whole file for
every compression magic and tries each hit, this reads the setup header:
``payload_offset``/``payload_length`` (boot protocol 2.08+) say exactly
where the compressed kernel is, the magic at that spot says which
decompressor to use, and the last four payload bytes (the uncompressed
size the kernel build appends) check the result. The relocation table the
build appends after the ELF image is only for the decompressor, so the
output is cut at the end of the ELF file proper.
"""

import bz2
import lzma
import struct
import subprocess
import sys
import zlib


def gunzip(data):
    return zlib.decompressobj(wbits=31).decompress(data)


def unxz(data):
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)


def unlzma(data):
    return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)


def bunzip2(data):
    return bz2.BZ2Decompressor().decompress(data)


def tool(*argv):
    def run(data):
        try:
            return subprocess.run(argv, input=data, stdout=subprocess.PIPE, check=True).stdout
        except FileNotFoundError:
            fail(f"{argv[0]} is not installed (Debian package {argv[0]})")
        except subprocess.CalledProcessError as error:
            fail(f"{argv[0]} failed with status {error.returncode}")
    return run


FORMATS = [
    (b"\x1f\x8b\x08", "gzip", gunzip),
    (b"\xfd7zXZ\x00", "xz", unxz),
    (b"BZh", "bzip2", bunzip2),
    (b"\x5d\x00\x00", "lzma", unlzma),
    (b"\x89LZO", "lzo", tool("lzop", "-dc")),
    (b"\x02\x21\x4c\x18", "lz4", tool("lz4", "-dc")),
    (b"\x28\xb5\x2f\xfd", "zstd", tool("zstd", "-dc")),
]


def fail(message):
    sys.exit(f"extract-vmlinux: {message}")


def payload(image):
    if image[0x202:0x206] != b"HdrS":
        fail("not a bzImage (no HdrS header)")
    version, = struct.unpack_from("<H", image, 0x206)
    if version < 0x0208:
        fail(f"boot protocol {version >> 8}.{version & 0xff:02d} has no payload_offset (needs 2.08)")
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return image[start:start + length]


def decompress(data):
    for magic, name, function in FORMATS:
        if data.startswith(magic):
            print(f"extract-vmlinux: payload is {name}, {len(data)} bytes", file=sys.stderr)
            return function(data)
    fail(f"unknown compression (payload starts {data[:6].hex()})")


def elf_end(elf):
    """End of the ELF file proper: its headers, segments and section table."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        fail("decompressed payload is not a 64-bit ELF file")
    phoff, shoff = struct.unpack_from("<QQ", elf, 32)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", elf, 54)
    end = max(phoff + phentsize * phnum, shoff + shentsize * shnum)
    for index in range(phnum):
        offset, filesz = struct.unpack_from("<Q24xQ", elf, phoff + index * phentsize + 8)
        end = max(end, offset + filesz)
    return end


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    with open(sys.argv[1], "rb") as file:
        image = file.read()
    data = payload(image)
    expected, = struct.unpack("<I", data[-4:])
    elf = decompress(data[:-4])
    if len(elf) != expected:
        fail(f"decompressed {len(elf)} bytes, the image says {expected}")
    elf = elf[:elf_end(elf)]
    with open(sys.argv[2], "wb") as file:
        file.write(elf)
    print(f"extract-vmlinux: wrote {sys.argv[2]}, {len(elf)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
