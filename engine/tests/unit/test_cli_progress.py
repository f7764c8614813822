"""Progress of long commands: the VM process's file, the command's poll, the terminal line;
and the one table renderer of the listings."""

import io
import json
import os
import time

import pytest

from ferry.cli.progress import Bar, progress_bar
from ferry.cli.table import print_table
from ferry.store import progress as prog


def test_the_writer_replaces_the_file_at_most_ten_times_a_second_and_removes_it(tmp_path):
    path = prog.progress_file(tmp_path)
    writer = prog.ProgressWriter(path, "snapshot")
    writer("memory", 1, 10)
    writer("memory", 2, 10)  # too soon after the first: dropped
    assert json.loads(path.read_text()) == {"op": "snapshot", "step": "memory", "done": 1, "total": 10}
    time.sleep(prog.INTERVAL)
    writer("compress", 5, 10)
    assert prog.read_progress(path)["step"] == "compress"
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"], "a temporary file was left"
    writer.close()
    assert not path.exists()
    writer.close()  # already gone: fine


def test_a_writer_that_cannot_write_does_not_stop_the_operation(tmp_path):
    writer = prog.ProgressWriter(tmp_path / "no-such-folder" / "progress.json", "snapshot")
    writer("memory", 1, 2)
    writer.close()


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"step": 1, "done": 1, "total": 2}',
                                     b'{"step": "m", "done": -1, "total": 2}', b'{"step": "m", "done": "1"}',
                                     b"{" * 100000, b'{"step": "m", "done": 1, "total": 2' + b" " * (2 << 20) + b"}"])
def test_malformed_progress_is_no_progress(tmp_path, content):
    path = tmp_path / "progress.json"
    path.write_bytes(content)
    assert prog.read_progress(path) is None


def test_a_linked_or_odd_progress_file_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text('{"step": "m", "done": 1, "total": 2}')
    (tmp_path / "progress.json").symlink_to(target)
    assert prog.read_progress(tmp_path / "progress.json") is None
    os.mkfifo(tmp_path / "fifo.json")
    assert prog.read_progress(tmp_path / "fifo.json") is None  # and it did not wait


def test_the_watch_hands_each_new_reading_on_and_stops(tmp_path):
    path = prog.progress_file(tmp_path)
    seen = []
    with prog.Watch(path, lambda *figures: seen.append(figures)):
        writer = prog.ProgressWriter(path, "snapshot")
        writer("memory", 3, 4)
        time.sleep(prog.INTERVAL * 4)
    assert seen == [("memory", 3, 4)]
    with prog.Watch(path, None) as idle:  # no one to tell: no thread
        assert not idle.thread.is_alive()


def test_the_bar_draws_one_line_and_clears_it():
    stream = io.StringIO()
    bar = Bar("vm1", stream)
    bar("memory", 0, 2 << 20)
    bar("memory", 1 << 20, 2 << 20)  # within the interval: not drawn
    time.sleep(0.11)
    bar("compress", 4 << 20, 2 << 20)  # more than the total: shown as full, not past it
    bar.clear()
    text = stream.getvalue()
    assert "\n" not in text and text.count("\r") == 4  # two lines drawn, then one cleared
    assert "vm1: memory   [" in text and "0%" in text and "100% 4/2 MiB" in text
    assert text.endswith("\r") and text.rsplit("\r", 2)[1].strip() == ""


def test_no_bar_when_stderr_is_not_a_terminal(capsys):
    with progress_bar("vm1") as progress:
        assert progress is None
    assert capsys.readouterr().err == ""


def test_the_table_aligns_columns_under_a_header(capsys):
    print_table(("ID", "STATUS"), [["a-long-id", "ok"], ["b", "DAMAGED - two\nlines"]])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["ID         STATUS", "a-long-id  ok", "b          DAMAGED - two lines"]


def test_an_empty_table_is_its_header(capsys):
    print_table(("NAME", "STATE"), [])
    assert capsys.readouterr().out == "NAME  STATE\n"
