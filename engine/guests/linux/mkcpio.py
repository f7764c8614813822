#!/usr/bin/env python3
"""Write a directory tree as a cpio "newc" archive, plus /dev/console.

usage: mkcpio.py DIRECTORY OUTPUT

The kernel opens /dev/console for /init's stdin/stdout/stderr before
/init runs, so the node must already be in the archive; writing the
archive here (instead of with cpio(1) from a staging tree) lets an
unprivileged user add it, and fixed owners and timestamps make the
archive the same bytes on every build.
"""

import os
import stat
import sys

CONSOLE = ("dev/console", stat.S_IFCHR | 0o600, (5, 1))
MTIME = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def entry(name, mode, data=b"", rdev=(0, 0), inode=0):
    fields = [inode, mode, 0, 0, 1, MTIME, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    return pad(header + name.encode() + b"\0") + pad(data)


def pad(data):
    return data + b"\0" * (-len(data) % 4)


def walk(root):
    """(archive name, lstat, data) for every path under ``root``, parents first."""
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(subdirs + files):
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                data = os.readlink(path).encode()
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as file:
                    data = file.read()
            else:
                data = b""
            yield os.path.relpath(path, root), info, data


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    root, output = sys.argv[1:]
    names = set()
    with open(output, "wb") as archive:
        inode = 1
        for name, info, data in walk(root):
            mode = stat.S_IFMT(info.st_mode) | stat.S_IMODE(info.st_mode)
            archive.write(entry(name, mode, data, inode=inode))
            names.add(name)
            inode += 1
        if "dev" not in names:
            archive.write(entry("dev", stat.S_IFDIR | 0o755, inode=inode))
            inode += 1
        name, mode, rdev = CONSOLE
        archive.write(entry(name, mode, rdev=rdev, inode=inode))
        archive.write(entry("TRAILER!!!", 0))


if __name__ == "__main__":
    main()
