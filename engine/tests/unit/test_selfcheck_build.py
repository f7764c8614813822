"""The self-checking guest builds reproducibly into an ELF the boot contract accepts."""

import platform
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import ferry.guests as guests
from ferry.errors import FerryError

SOURCE = Path(__file__).resolve().parents[2] / "guests" / "selfcheck"
HIGH_MEMORY = 0x100000
PT_LOAD, PT_NOTE, PF_X = 1, 4, 1


def _build(where: Path) -> bytes:
    out = where / "selfcheck.elf"
    result = subprocess.run(["make", "-C", str(SOURCE), f"OUT={out}", f"BUILD={where / 'obj'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout
    return out.read_bytes()


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make and gcc are needed to build the guest")
    if platform.machine() != "x86_64":
        pytest.skip("the guest is x86-64 code built with the host gcc")
    return [_build(tmp_path_factory.mktemp(name)) for name in ("first", "second")]


def _program_headers(data: bytes):
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for index in range(phnum):
        yield struct.unpack_from("<IIQQQQQQ", data, phoff + index * phentsize)


def test_elf64_x86_64_executable(builds):
    data = builds[0]
    assert data[:4] == b"\x7fELF"
    assert data[4] == 2 and data[5] == 1           # ELFCLASS64, little-endian
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    assert e_type == 2                              # ET_EXEC
    assert e_machine == 62                          # EM_X86_64


def test_entry_lies_in_an_executable_load_segment(builds):
    data = builds[0]
    entry, = struct.unpack_from("<Q", data, 24)
    holders = [(flags, vaddr, memsz) for kind, flags, _off, vaddr, _pa, _fs, memsz, _al
               in _program_headers(data) if kind == PT_LOAD and vaddr <= entry < vaddr + memsz]
    assert len(holders) == 1
    assert holders[0][0] & PF_X


def test_no_load_segment_below_1_mib(builds):
    loads = [h for h in _program_headers(builds[0]) if h[0] == PT_LOAD]
    assert loads
    for _kind, _flags, _off, vaddr, paddr, filesz, memsz, _align in loads:
        assert paddr >= HIGH_MEMORY
        assert vaddr == paddr                      # the contract's identity map
        assert filesz <= memsz


def test_image_is_small(builds):
    loads = [h for h in _program_headers(builds[0]) if h[0] == PT_LOAD]
    end = max(paddr + memsz for _k, _f, _o, _v, paddr, _fs, memsz, _a in loads)
    # The workload owns a share of the RAM above the image: keep the image well
    # inside the smallest VM the tests use.
    assert end - HIGH_MEMORY < 4 * 1024 * 1024


def test_no_build_id_note(builds):
    assert all(h[0] != PT_NOTE for h in _program_headers(builds[0]))
    assert b".note.gnu.build-id" not in builds[0]


def test_building_twice_is_byte_identical(builds):
    assert builds[0] == builds[1]


def test_build_does_not_embed_build_paths(builds):
    assert str(SOURCE).encode() not in builds[0]
    assert b"/tmp/" not in builds[0]


def test_builtin_kernel_rejects_unknown_names():
    with pytest.raises(FerryError, match="no built-in kernel named 'nope'"):
        guests.builtin_kernel("nope")


def test_builtin_kernel_reports_a_missing_elf(tmp_path, monkeypatch):
    monkeypatch.setattr(guests, "__file__", str(tmp_path / "__init__.py"))
    with pytest.raises(FerryError) as caught:
        guests.builtin_kernel("selfcheck")
    assert "\n" not in str(caught.value)
    assert "selfcheck" in str(caught.value)


def test_builtin_kernel_returns_the_packaged_elf(tmp_path, monkeypatch):
    (tmp_path / "selfcheck.elf").write_bytes(b"\x7fELF")
    monkeypatch.setattr(guests, "__file__", str(tmp_path / "__init__.py"))
    assert guests.builtin_kernel("selfcheck") == tmp_path / "selfcheck.elf"
