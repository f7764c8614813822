"""Chunk files without KVM: a save links what its parent holds unchanged and writes the rest,
never writing into a file it shares; the chunks map and load back as guest RAM."""

import os

import pytest

from ferry.memory import GuestMemory
from ferry.memory.chunks import CHUNK_SIZE, ZERO_CHUNK_DIGEST
from ferry.snapshot import format as fmt
from ferry.snapshot import reader
from ferry.snapshot.save import ChunkStore

SIZE = 4 * CHUNK_SIZE


@pytest.fixture
def memory():
    ram = GuestMemory(SIZE)
    ram.view[0:5] = b"first"
    ram.view[2 * CHUNK_SIZE + 4096:2 * CHUNK_SIZE + 4101] = b"third"
    yield ram
    ram.close()


def save_all(folder, memory, parent=None) -> tuple[list[str], int]:
    folder.mkdir()
    store = ChunkStore(folder, memory, parent)
    try:
        written = sum(store.save(index) for index in range(SIZE // CHUNK_SIZE))
        store.sync()
        return store.digests, written
    finally:
        store.close()


def as_parent(folder, digests) -> reader.Snapshot:
    return reader.Snapshot(folder, {"memory": {"file": fmt.CHUNKS, "chunks": digests}}, None, {})


def inode(folder, index) -> int:
    return os.stat(folder / fmt.CHUNKS / str(index)).st_ino


def test_a_full_save_writes_each_chunk_with_data_and_no_file_for_zero_ones(tmp_path, memory):
    digests, written = save_all(tmp_path / "a", memory)
    assert sorted(os.listdir(tmp_path / "a" / fmt.CHUNKS)) == ["0", "2"]
    assert digests[1] == digests[3] == ZERO_CHUNK_DIGEST
    assert written == 2 * 4096  # only the pages the guest touched: the rest stay holes
    assert os.stat(tmp_path / "a" / fmt.CHUNKS / "2").st_size == CHUNK_SIZE


def test_a_save_links_unchanged_chunks_and_writes_changed_ones(tmp_path, memory):
    digests, _ = save_all(tmp_path / "a", memory)
    memory.view[2 * CHUNK_SIZE:2 * CHUNK_SIZE + 5] = b"THIRD"
    child, written = save_all(tmp_path / "b", memory, as_parent(tmp_path / "a", digests))
    assert inode(tmp_path / "b", 0) == inode(tmp_path / "a", 0)
    assert inode(tmp_path / "b", 2) != inode(tmp_path / "a", 2) and written == 2 * 4096
    assert child[2] != digests[2]
    assert reader.chunk_usage(tmp_path / "b") == (8192, 4096)


def test_a_chunk_that_changes_again_gets_a_new_file_never_the_parents(tmp_path, memory):
    digests, _ = save_all(tmp_path / "a", memory)
    (tmp_path / "b").mkdir()
    store = ChunkStore(tmp_path / "b", memory, as_parent(tmp_path / "a", digests))
    try:
        assert store.save(0) == 0  # linked
        memory.view[0:5] = b"again"
        assert store.save(0) == 4096
    finally:
        store.close()
    assert (tmp_path / "a" / fmt.CHUNKS / "0").read_bytes()[:5] == b"first"
    assert (tmp_path / "b" / fmt.CHUNKS / "0").read_bytes()[:5] == b"again"


@pytest.mark.parametrize("harm", ["symlink", "truncated", "deleted folder"])
def test_a_parent_chunk_that_is_not_a_whole_file_is_written_instead(tmp_path, memory, harm):
    digests, _ = save_all(tmp_path / "a", memory)
    chunk = tmp_path / "a" / fmt.CHUNKS / "0"
    if harm == "symlink":
        os.rename(chunk, tmp_path / "elsewhere")
        chunk.symlink_to(tmp_path / "elsewhere")
    elif harm == "truncated":
        os.truncate(chunk, 4096)
    else:
        os.rename(tmp_path / "a", tmp_path / "gone")
    save_all(tmp_path / "b", memory, as_parent(tmp_path / "a", digests))
    copy = tmp_path / "b" / fmt.CHUNKS / "0"
    assert not copy.is_symlink() and copy.stat().st_nlink == 1 and copy.stat().st_size == CHUNK_SIZE


def _chunk_files(folder, digests) -> reader.ChunkFiles:
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return reader.open_chunks(folder_fd, digests, SIZE)
    finally:
        os.close(folder_fd)


def test_chunk_files_map_as_private_guest_ram_and_load_the_same(tmp_path, memory):
    digests, _ = save_all(tmp_path / "a", memory)
    with _chunk_files(tmp_path / "a", digests) as image:
        mapped = image.map()
        loaded = GuestMemory(SIZE)
        image.load_into(loaded)
    try:
        for ram in (mapped, loaded):
            assert bytes(ram.view[0:5]) == b"first" and bytes(ram.view[CHUNK_SIZE:CHUNK_SIZE + 5]) == bytes(5)
            assert bytes(ram.view[2 * CHUNK_SIZE + 4096:2 * CHUNK_SIZE + 4101]) == b"third"
        mapped.view[0:5] = b"guest"  # copy-on-write: the snapshot keeps what it saved
        assert (tmp_path / "a" / fmt.CHUNKS / "0").read_bytes()[:5] == b"first"
    finally:
        mapped.close()
        loaded.close()


def test_a_damaged_chunk_is_named_by_verify(tmp_path, memory):
    digests, _ = save_all(tmp_path / "a", memory)
    with open(tmp_path / "a" / fmt.CHUNKS / "2", "r+b") as handle:
        handle.write(b"x")
    with _chunk_files(tmp_path / "a", digests) as image, \
            pytest.raises(Exception, match=r"^chunks/2: checksum mismatch \(guest bytes 0x400000-0x5fffff\)$"):
        image.verify(digests)
