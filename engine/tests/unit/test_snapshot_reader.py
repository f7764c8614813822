"""Reading snapshots without KVM: every damaged or crafted snapshot is refused in one line,
naming the part, and no input ends in anything but a clean refusal or a valid snapshot."""

import ctypes
import json
import os
import shutil
import stat

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ferry.errors import FerryError
from ferry.machine import state
from ferry.files import open_private
from ferry.machine.sections import DEVICE_STATES, REGISTRY
from ferry.memory.chunks import CHUNK_SIZE, ZERO_CHUNK_DIGEST
from ferry.memory.digests import chunk_digests
from ferry.memory.image import compress_file
from ferry.store import definition as defn
from ferry.snapshot import format as fmt
from ferry.snapshot import reader

from support.damage import CORPUS, corpus, last_chunk, manifest_of, replace_section, write_resigned

MEMORY_MIB = 4


def _sections(vcpus: int) -> list[state.Section]:
    vcpu = {key: "00" * ctypes.sizeof(cls) for key, cls in state.VCPU_STRUCTS.items()}
    vcpu.update(msrs={"0x10": 5}, mp_state=0)
    sections = [state.Section(f"vcpu.{index}", 1, json.dumps(vcpu).encode()) for index in range(vcpus)]
    in_kernel = [kind for kind in REGISTRY.types if issubclass(kind.state, state.KvmStructState)]
    sections += [state.Section(kind.name, 1, bytes(ctypes.sizeof(kind.state.STRUCT))) for kind in in_kernel]
    return sections + [state.Section(name, kind.VERSION, kind().to_bytes()) for name, kind in DEVICE_STATES.items()]


def _chunk_files(folder, data: bytes, digests: list[str]) -> None:
    (folder / fmt.CHUNKS).mkdir(mode=0o700)
    for index, value in enumerate(digests):
        if value != ZERO_CHUNK_DIGEST:
            with open_private(folder / fmt.CHUNKS / str(index)) as handle:
                handle.write(data[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE])


def build_snapshot(folder, kernel, vcpus=1, compress=False, layout="chunks"):
    """A complete, valid snapshot folder as ``save.create`` writes one, without a VM:
    chunk files (the format this engine writes) or format 1's memory.raw (``layout="raw"``)."""
    folder.mkdir(mode=0o700)
    size = MEMORY_MIB * 2**20
    with open_private(folder / fmt.MEMORY) as handle:
        handle.truncate(size)
        handle.seek(3 * 2**20 + 4096)
        handle.write(b"guest data" * 1000)
    data = (folder / fmt.MEMORY).read_bytes()
    memory = {"file": fmt.MEMORY, "size": size, "chunk_size": CHUNK_SIZE, "compression": None,
              "chunks": chunk_digests(size, lambda start, length: data[start:start + length])}
    if compress:
        memory.update(compress_file(folder / fmt.MEMORY))
    elif layout == "chunks":
        (folder / fmt.MEMORY).unlink()
        _chunk_files(folder, data, memory["chunks"])
        memory["file"] = fmt.CHUNKS
    fmt.write_manifest(folder, {
        "id": folder.name, "engine_version": "0.0", "created": "2026-01-01T00:00:00.000000Z",
        "origin": {"kind": "manual"}, "tags": ["a"], "sections": fmt.write_state(folder, _sections(vcpus)),
        "definition": {"name": "vm1", "vcpus": vcpus, "memory": MEMORY_MIB, "kernel": str(kernel),
                       "initrd": None, "cmdline": ""},
        "memory": memory,
        "save": {"mode": "live", "pause_ms": 1.5, "total_ms": 9.0, "rounds": [4096], "bytes_written": 8192,
                 "disk_bytes": 8192}})
    if layout == "raw":
        manifest = manifest_of(folder)
        manifest["format_version"] = 1
        write_resigned(folder, manifest)
    return folder


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    kernel = tmp_path_factory.mktemp("kernel") / "kernel.elf"
    kernel.write_bytes(b"\x7fELF")
    return kernel


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, kernel):
    return build_snapshot(tmp_path_factory.mktemp("pristine") / "good", kernel)


@pytest.fixture(scope="module")
def pristine_v1(tmp_path_factory, kernel):
    return build_snapshot(tmp_path_factory.mktemp("pristine-v1") / "good", kernel, layout="raw")


def fresh(pristine, tmp_path):
    copy = tmp_path / "good"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(pristine, copy, symlinks=True)
    return copy


@pytest.fixture
def folder(pristine, tmp_path):
    return fresh(pristine, tmp_path)


def load(folder, verify_memory=True):
    return reader.load(folder, defn.validate, verify_memory)


def test_a_good_snapshot_loads_with_its_definition_and_sections(folder):
    snapshot = load(folder)
    assert (snapshot.definition.vcpus, snapshot.definition.memory) == (1, MEMORY_MIB)
    assert set(snapshot.sections) == set(REGISTRY.names(1))


def test_every_file_of_a_snapshot_is_private(tmp_path, pristine, kernel):
    for snapshot in (pristine, build_snapshot(tmp_path / "z", kernel, compress=True)):
        assert stat.S_IMODE(snapshot.stat().st_mode) == 0o700
        modes = {path.relative_to(snapshot): stat.S_IMODE(path.stat().st_mode) for path in snapshot.rglob("*")}
        assert modes and set(modes.values()) <= {0o600, 0o700}, modes
        assert all(mode == 0o600 for path, mode in modes.items() if path.name != fmt.CHUNKS), modes
    assert load(tmp_path / "z").compressed


def _refused_naming(folder, damage) -> None:
    named = last_chunk(folder) if damage.names_last_chunk else ""
    damage.harm(folder)
    for verify_memory in (True, False):
        try:
            load(folder, verify_memory)
        except fmt.SnapshotError as refused:
            message = str(refused)
            assert damage.words in message and named in message and len(message.splitlines()) == 1, message
        else:
            # Only the digests may see it, and --no-verify skips them.
            assert damage.digest_only and not verify_memory, f"{damage.name}: accepted"


@pytest.mark.parametrize("name", sorted(corpus("chunks")))
def test_damaged_snapshot_is_refused_in_one_line_naming_the_part(folder, name):
    _refused_naming(folder, CORPUS[name])


@pytest.mark.parametrize("name", sorted(corpus("raw")))
def test_damaged_format_1_snapshot_is_refused_in_one_line_naming_the_part(pristine_v1, tmp_path, name):
    _refused_naming(fresh(pristine_v1, tmp_path), CORPUS[name])


def test_the_corpus_covers_every_class():
    assert len(CORPUS) >= 90
    for words in ("memory.chunks", "memory.file", "a FIFO", "a symlink", "a directory", "missing",
                  "nested", "definition", "section", "memory.size"):
        assert any(words in d.words or words in d.name for d in CORPUS.values()), words


def test_a_fifo_is_refused_without_blocking(folder):
    (folder / fmt.CHUNKS / "1").unlink()
    os.mkfifo(folder / fmt.CHUNKS / "1")  # nobody writes to it: an open or read would wait for ever
    with pytest.raises(fmt.SnapshotError, match="chunks/1: a FIFO"):
        load(folder, verify_memory=False)


def test_a_symlinked_snapshot_folder_is_refused(folder):
    link = folder.with_name("linked")
    link.symlink_to(folder)
    with pytest.raises(fmt.SnapshotError, match="plain directory"):
        load(link)


# --- properties: anything at all ends in a clean refusal or a valid snapshot ---

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _outcome(folder):
    try:
        return load(folder)
    except FerryError as err:
        assert len(str(err).splitlines()) == 1, str(err)
        return None


@PROPERTY
@given(value=json_values, resigned=st.booleans())
def test_any_json_as_the_manifest_is_refused_cleanly(pristine, tmp_path, value, resigned):
    folder = fresh(pristine, tmp_path)
    if resigned:
        write_resigned(folder, value)
    else:
        (folder / fmt.MANIFEST).write_text(json.dumps(value))
    assert _outcome(folder) is None


def _paths(value, prefix=()):
    yield prefix
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _paths(child, prefix + (key,))


@PROPERTY
@given(data=st.data())
def test_any_change_to_a_resigned_manifest_is_refused_or_harmless(pristine, tmp_path, data):
    folder = fresh(pristine, tmp_path)
    manifest = manifest_of(folder)
    manifest.pop("manifest_checksum")
    paths = [p for p in _paths(manifest) if p and (len(p) < 3 or p[:2] != ("memory", "chunks"))]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = manifest
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["set", "delete", "add"]))
        if action == "delete" or (action == "add" and not isinstance(parent, dict)):
            del parent[path[-1]]
        elif action == "add":
            parent[data.draw(st.text(max_size=8))] = data.draw(json_values)
        else:
            parent[path[-1]] = data.draw(json_values)
        paths = [p for p in _paths(manifest) if p and (len(p) < 3 or p[:2] != ("memory", "chunks"))]
        if not paths:
            break
    write_resigned(folder, manifest)
    snapshot = _outcome(folder)
    if snapshot is not None:
        assert snapshot.manifest["memory"]["size"] == snapshot.definition.memory * 2**20


def _state_with(folder, name, data):
    manifest = manifest_of(folder)
    replace_section(manifest, folder, name, data)
    write_resigned(folder, manifest)


SECTION_NAMES = sorted(REGISTRY.names(1))


@PROPERTY
@given(name=st.sampled_from(SECTION_NAMES), data=st.binary(max_size=600))
def test_any_bytes_in_a_section_are_refused_cleanly(pristine, tmp_path, name, data):
    folder = fresh(pristine, tmp_path)
    _state_with(folder, name, data)
    _outcome(folder)


@PROPERTY
@given(name=st.sampled_from(SECTION_NAMES), value=json_values, key=st.sampled_from(
    sorted(state.VCPU_KEYS) + ["ier", "rx_fifo", "ram", "frozen", "offset"]))
def test_any_json_in_a_section_is_refused_cleanly(pristine, tmp_path, name, value, key):
    folder = fresh(pristine, tmp_path)
    _state_with(folder, name, json.dumps({key: value}).encode())
    _outcome(folder)


@PROPERTY
@given(values=st.fixed_dictionaries({key: json_values for key in sorted(state.VCPU_KEYS)}))
def test_any_vcpu_values_are_refused_cleanly(pristine, tmp_path, values):
    folder = fresh(pristine, tmp_path)
    _state_with(folder, "vcpu.0", json.dumps(values).encode())
    assert _outcome(folder) is None
