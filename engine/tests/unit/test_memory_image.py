"""Guest memory in chunks, as snapshots and migration both see it: the chunk walk, the
digests, the dirty-log reader and the memory image (raw or zstd) that verify and
restore read. Properties cover every byte of a range, image round trips, and a byte
flipped anywhere being named in its own chunk."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ferry.files import open_private
from ferry.memory import GuestMemory, chunks
from ferry.memory.chunks import CHUNK_SIZE, ZERO_CHUNK_DIGEST
from ferry.memory.digests import ChunkDigests, chunk_digests
from ferry.memory.dirty import _runs
from ferry.memory.image import MemoryImage, MemoryImageError, compress_file

MIB = 2**20
# Each example moves megabytes: fewer of them, and no per-example deadline on a shared machine.
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# A few chunks of memory with a handful of written spans, some crossing chunk borders.
spans = st.lists(st.tuples(st.integers(0, 3 * CHUNK_SIZE - 1), st.binary(min_size=1, max_size=5000)), max_size=6)
SIZE = 3 * CHUNK_SIZE


def _ranges_of(size):
    return st.tuples(st.integers(0, size - 1), st.integers(1, size)).map(lambda p: (p[0], max(p[0] + 1, p[1])))


# --- the chunk walk ---

@settings(deadline=None)
@given(_ranges_of(8 * CHUNK_SIZE))
def test_the_chunk_walk_covers_every_byte_of_a_range_once_in_order(span):
    start, end = span
    position = start
    for piece, length in chunks.pieces(start, end):
        assert piece == position and length > 0
        assert piece // CHUNK_SIZE == (piece + length - 1) // CHUNK_SIZE  # inside one chunk
        assert length < CHUNK_SIZE or piece % CHUNK_SIZE == 0              # a whole chunk is aligned
        position += length
    assert position == end


@settings(deadline=None)
@given(_ranges_of(8 * CHUNK_SIZE))
def test_touched_names_exactly_the_chunks_a_range_falls_in(span):
    start, end = span
    assert set(chunks.touched(start, end)) == {piece // CHUNK_SIZE for piece, _ in chunks.pieces(start, end)}
    assert chunks.touched(start, end)[0] == start // CHUNK_SIZE
    assert chunks.touched(start, end)[-1] == (end - 1) // CHUNK_SIZE


@settings(deadline=None)
@given(st.integers(1, 64 * CHUNK_SIZE))
def test_the_chunks_of_a_size_tile_it(size):
    spans_ = [chunks.span(index, size) for index in range(chunks.count(size))]
    assert spans_[0][0] == 0 and sum(length for _, length in spans_) == size
    assert all(start + length == following for (start, length), (following, _) in zip(spans_, spans_[1:]))


def test_the_zero_digest_is_that_of_a_zero_chunk_and_digests_take_any_buffer():
    zero = bytes(CHUNK_SIZE)
    assert chunks.digest(zero) == ZERO_CHUNK_DIGEST == chunks.digest(memoryview(bytearray(zero)))
    assert chunks.digest(b"\x00" * (CHUNK_SIZE - 1) + b"\x01") != ZERO_CHUNK_DIGEST


# --- files: holes and data ---

def _written(data, index: int) -> bool:
    start, length = chunks.span(index, len(data))
    return bytes(data[start:start + length]).strip(b"\0") != b""


def _image_file(path: Path, writes, size=SIZE) -> bytes:
    """A sparse raw image with ``writes`` (offset, bytes) in it; returns its bytes."""
    with open_private(path) as handle:
        handle.truncate(size)
        for offset, data in writes:
            handle.seek(offset)
            handle.write(data[:size - offset])
    return path.read_bytes()


@PROPERTY
@given(writes=spans)
def test_data_ranges_hold_every_non_zero_byte_and_stay_inside_the_size(tmp_path, writes):
    path = tmp_path / "image"
    path.unlink(missing_ok=True)
    data = _image_file(path, writes)
    with open(path, "ab") as handle:
        handle.write(b"beyond the size")  # data past the end is not the memory's
    fd = os.open(path, os.O_RDONLY)
    try:
        ranges = list(chunks.data_ranges(fd, SIZE))
        with_data = chunks.with_data(fd, SIZE)
    finally:
        os.close(fd)
    assert all(0 <= start < end <= SIZE for start, end in ranges)
    covered = bytearray(SIZE)
    for start, end in ranges:
        covered[start:end] = data[start:end]
    assert bytes(covered) == data
    assert with_data <= set(range(chunks.count(SIZE)))
    assert {index for index in range(chunks.count(SIZE)) if _written(data, index)} <= with_data


# --- digests ---

@PROPERTY
@given(writes=spans)
def test_digests_skip_holes_without_changing_the_list(writes):
    data = bytearray(SIZE)
    for offset, chunk in writes:
        data[offset:offset + len(chunk)] = chunk[:SIZE - offset]
    read = lambda start, length: data[start:start + length]  # noqa: E731
    written = {index for index in range(chunks.count(SIZE)) if _written(data, index)}
    assert chunk_digests(SIZE, read, written) == chunk_digests(SIZE, read)


@PROPERTY
@given(moves=st.lists(st.tuples(_ranges_of(SIZE), st.binary(min_size=1, max_size=64), st.booleans()), max_size=12))
def test_running_digests_end_equal_to_digests_taken_at_once(moves):
    """Whole chunks noted as they move and partial moves refreshed later give the same
    list as hashing the final memory: no change is lost between rounds."""
    memory = bytearray(SIZE)
    read = lambda start, length: bytes(memory[start:start + length])  # noqa: E731
    running = ChunkDigests(SIZE, read)
    for (start, end), fill, refresh in moves:
        memory[start:end] = (fill * ((end - start) // len(fill) + 1))[:end - start]
        for piece, length in chunks.pieces(start, end):
            if length == CHUNK_SIZE:
                running.known(piece, chunks.digest(read(piece, length)))
            else:
                running.moved(piece, piece + length)
        if refresh:
            running.refresh()
    assert running.refresh() == chunk_digests(SIZE, read)


# --- the dirty log ---

@settings(deadline=None)
@given(st.binary(max_size=64))
def test_dirty_runs_are_the_set_bits_in_order_and_maximal(bitmap):
    runs = list(_runs(bitmap))
    pages = [page for first, count in runs for page in range(first, first + count)]
    assert pages == [index for index in range(len(bitmap) * 8) if bitmap[index // 8] >> index % 8 & 1]
    assert all(count > 0 for _, count in runs)
    assert all(a + n < b for (a, n), (b, _) in zip(runs, runs[1:]))  # two runs never touch


# --- the memory image ---

def _image(path: Path, compressed: bool) -> MemoryImage:
    return MemoryImage(os.open(path, os.O_RDONLY | os.O_CLOEXEC), path.name, SIZE, compressed)


def _saved(tmp_path: Path, writes, compressed: bool) -> tuple[Path, bytes]:
    raw = tmp_path / "memory.raw"
    for old in tmp_path.iterdir():
        old.unlink()
    data = _image_file(raw, writes)
    if compressed:
        compress_file(raw)
        return tmp_path / "memory.raw.zst", data
    return raw, data


def _ram(memory: GuestMemory) -> bytes:
    return bytes(memory.view[:memory.size])


@PROPERTY
@given(writes=spans, compressed=st.booleans())
def test_an_image_round_trips_raw_or_zstd(tmp_path, writes, compressed):
    """The RAM loaded is the RAM saved, and the last progress figure is the whole image."""
    path, data = _saved(tmp_path, writes, compressed)
    expected = chunk_digests(SIZE, lambda start, length: data[start:start + length])
    heard = []
    with _image(path, compressed) as image:
        assert image.digests() == expected
        image.verify(expected)
        memory = GuestMemory(SIZE)
        try:
            image.load_into(memory, lambda *figures: heard.append(figures))
            assert _ram(memory) == data
        finally:
            memory.close()
        if not compressed:
            assert heard[-1] == ("load", SIZE, SIZE)
        assert all(step == "load" and 0 <= done <= total == SIZE for step, done, total in heard)
        if not compressed:
            mapped = image.map()
            try:
                assert _ram(mapped) == data
                mapped.write(0, b"guest writes")  # copy-on-write: the file keeps its bytes
            finally:
                mapped.close()
    if not compressed:
        assert path.read_bytes() == data


@PROPERTY
@given(writes=spans, flip=st.integers(0, SIZE - 1), bit=st.integers(0, 7), compressed=st.booleans())
def test_a_flipped_byte_is_found_in_its_own_chunk(tmp_path, writes, flip, bit, compressed):
    path, data = _saved(tmp_path, writes, compressed=False)
    expected = chunk_digests(SIZE, lambda start, length: data[start:start + length])
    with open(path, "r+b") as handle:
        handle.seek(flip)
        handle.write(bytes([data[flip] ^ 1 << bit]))
    if compressed:
        compress_file(path)
        path = path.with_name(path.name + ".zst")
    index = flip // CHUNK_SIZE
    with _image(path, compressed) as image:
        with pytest.raises(MemoryImageError) as refused:
            image.verify(expected)
    start = index * CHUNK_SIZE
    assert str(refused.value) == (f"{path.name}: chunk {index} (guest bytes {start:#x}-"
                                  f"{start + CHUNK_SIZE - 1:#x}) checksum mismatch")


def test_a_raw_image_of_the_wrong_size_is_refused_and_closed(tmp_path):
    path = tmp_path / "memory.raw"
    _image_file(path, [], size=SIZE - 4096)
    fd = os.open(path, os.O_RDONLY)
    with pytest.raises(MemoryImageError, match=f"memory.raw: {SIZE - 4096} bytes, expected {SIZE}"):
        MemoryImage(fd, path.name, SIZE, compressed=False)
    with pytest.raises(OSError):
        os.fstat(fd)  # the image took the fd, and closed it when it refused


@pytest.mark.parametrize("harm, words", [
    (lambda data: data[:len(data) // 2], "ends at guest byte"),
    (lambda data: b"", "ends at guest byte 0x0"),
    (lambda data: b"not zstd at all" * 100, "cannot decompress"),
])
def test_a_damaged_zstd_image_is_refused_in_one_line(tmp_path, harm, words):
    path, _ = _saved(tmp_path, [(5, b"data" * 1000), (CHUNK_SIZE + 7, os.urandom(9000))], compressed=True)
    path.write_bytes(harm(path.read_bytes()))
    with _image(path, compressed=True) as image:
        for attempt in (image.digests, lambda: image.load_into(memory)):
            memory = GuestMemory(SIZE)
            try:
                with pytest.raises(MemoryImageError) as refused:
                    attempt()
            finally:
                memory.close()
            assert words in str(refused.value) and len(str(refused.value).splitlines()) == 1


def test_a_zstd_image_longer_than_the_memory_is_read_only_as_far_as_the_size(tmp_path):
    raw = tmp_path / "memory.raw"
    _image_file(raw, [(SIZE + 10, b"past the end")], size=SIZE + 2 * CHUNK_SIZE)
    compress_file(raw)
    with _image(tmp_path / "memory.raw.zst", compressed=True) as image:
        assert image.digests() == [ZERO_CHUNK_DIGEST] * chunks.count(SIZE)


def test_a_compressed_image_cannot_be_mapped(tmp_path):
    path, _ = _saved(tmp_path, [], compressed=True)
    with _image(path, compressed=True) as image:
        with pytest.raises(MemoryImageError, match="cannot be mapped"):
            image.map()


def test_a_verify_needs_a_digest_for_every_chunk(tmp_path):
    path, data = _saved(tmp_path, [], compressed=False)
    with _image(path, compressed=False) as image:
        with pytest.raises(ValueError):
            image.verify([ZERO_CHUNK_DIGEST] * (chunks.count(SIZE) - 1))

