"""Little-endian fields out of bytes the guest would read."""

import struct


def u8(data, offset):
    return data[offset]


def u16(data, offset):
    return struct.unpack_from("<H", data, offset)[0]


def u32(data, offset):
    return struct.unpack_from("<I", data, offset)[0]


def u64(data, offset):
    return struct.unpack_from("<Q", data, offset)[0]
