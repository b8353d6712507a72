"""capsa.manager.logs: the k8s-file parser, the writer's rotation, reading and following."""

from __future__ import annotations

import os
import threading
import time

import pytest

from capsa.manager import logs
from capsa.manager.errors import ManagerError


def test_parse_line_full_and_partial():
    record = logs.parse_line(b"2026-12-07T05:53:00.123456789+00:00 stdout F hello world\n")
    assert record.stream == "stdout" and not record.partial and record.text == b"hello world"
    assert record.nanos == 1796622780 * 10**9 + 123456789
    partial = logs.parse_line(b"2026-12-07T05:53:00.5+01:00 stderr P no newline")
    assert partial.partial and partial.stream == "stderr" and partial.text == b"no newline"
    assert partial.nanos == (1796622780 - 3600) * 10**9 + 500000000
    empty = logs.parse_line(b"2026-12-07T05:53:00.123456789+00:00 stdout F")
    assert empty.text == b"" and not empty.partial


@pytest.mark.parametrize("line", [b"", b"garbage", b"2026-12-07T05:53:00Z stdin F x", b"not-a-time-at-all stdout F x",
                                  b"2026-12-07T05:53:00Z stdout X x"])
def test_parse_line_rejects_what_is_not_a_record(line):
    assert logs.parse_line(line) is None


def test_writer_records_lines_and_partial(tmp_path):
    path = str(tmp_path / "ctr.log")
    with logs.LogWriter(path) as writer:
        writer.write("stdout", b"one\ntwo\npart")
        writer.write("stderr", b"err\n")
    records = logs.read(path)
    assert [(r.stream, r.partial, r.text) for r in records] == [
        ("stdout", False, b"one"), ("stdout", False, b"two"), ("stdout", True, b"part"), ("stderr", False, b"err")]


def test_rotation_keeps_max_files_and_never_splits_a_record(tmp_path):
    path = str(tmp_path / "ctr.log")
    with logs.LogWriter(path, max_size=200, max_files=3) as writer:
        for number in range(100):
            writer.write("stdout", b"line %03d\n" % number)
    names = sorted(os.listdir(tmp_path))
    assert names == ["ctr.log", "ctr.log.1", "ctr.log.2"]
    for name in names:
        assert os.path.getsize(tmp_path / name) <= 200
        for line in (tmp_path / name).read_bytes().splitlines():
            assert logs.parse_line(line) is not None
    texts = [r.text for r in logs.read(path)]
    # the newest lines, in order, ending with the last one written
    assert texts == [b"line %03d" % n for n in range(100 - len(texts), 100)]


def test_rotation_with_one_file_starts_an_empty_log(tmp_path):
    path = str(tmp_path / "ctr.log")
    with logs.LogWriter(path, max_size=100, max_files=1) as writer:
        for number in range(20):
            writer.write("stdout", b"line %03d\n" % number)
    assert os.listdir(tmp_path) == ["ctr.log"]
    assert logs.read(path)[-1].text == b"line 019"


def test_read_since_until_and_tail(tmp_path):
    path = tmp_path / "ctr.log"
    path.write_bytes(b"2026-01-01T00:00:00.000000000+00:00 stdout F a\n"
                     b"2026-01-01T00:00:01.000000000+00:00 stdout F b\n"
                     b"2026-01-01T00:00:02.000000000+00:00 stderr F c\n"
                     b"2026-01-01T00:00:03.000000000+00:00 stdout P d")  # a record being written: not yet
    second = 1767225601 * 10**9
    assert [r.text for r in logs.read(str(path))] == [b"a", b"b", b"c"]
    assert [r.text for r in logs.read(str(path), since=second)] == [b"b", b"c"]
    assert [r.text for r in logs.read(str(path), until=second)] == [b"a", b"b"]
    assert [r.text for r in logs.read(str(path), tail=2)] == [b"b", b"c"]
    assert [r.text for r in logs.read(str(path), tail=0)] == []
    assert logs.read(str(tmp_path / "missing.log")) == []


def test_follow_across_rotations_sees_every_line_once(tmp_path):
    """issue 18: a writer rotating fast (in another thread), a follower that sees each line
    exactly once. max_files is large enough that no file is deleted before the follower gets
    to it however slowly it runs (deletion: the next test)."""
    path = str(tmp_path / "ctr.log")
    total = 20000
    writer = logs.LogWriter(path, max_size=8192, max_files=200)
    writer.write("stdout", b"first\n")
    finished = threading.Event()

    def write_lines():
        for number in range(total):
            writer.write("stdout", b"%06d\n" % number)
        writer.close()
        finished.set()

    thread = threading.Thread(target=write_lines)
    thread.start()
    seen = [r.text for r in logs.follow(path, finished.is_set, poll_interval=0.001)]
    thread.join()
    assert seen[0] == b"first"
    numbers = [int(text) for text in seen[1:]]
    assert numbers == list(range(total))
    assert sum(1 for name in os.listdir(tmp_path) if name.startswith("ctr.log")) > 50


def test_read_and_follow_see_every_rotated_file(tmp_path):
    """max-file has no upper bound: the readers find every ctr.log.N (they looked at 64 names,
    so a follower more than 64 rotations behind lost the oldest lines)."""
    path = str(tmp_path / "ctr.log")
    with logs.LogWriter(path, max_size=100, max_files=150) as writer:
        for number in range(300):
            writer.write("stdout", b"%03d\n" % number)
    assert os.path.exists(path + ".140")
    everything = [b"%03d" % number for number in range(300)]
    assert [r.text for r in logs.read(path)] == everything
    assert [r.text for r in logs.follow(path, lambda: True, poll_interval=0)] == everything


class _LockStep:
    """A stand-in for the os module of capsa.manager.logs that runs the writer's thread one
    syscall at a time: each syscall of the reader lets the writer make `ratio` of its own and
    waits for them. Every interleaving of a rotation's renames with a reader's opens is then
    reached by some ratio, on any machine and at any load."""

    GATED = {"open", "fstat", "stat", "read", "write", "close", "lseek", "rename", "link", "unlink", "listdir"}

    def __init__(self, ratio: int):
        self.ratio = ratio
        self.cond = threading.Condition()
        self.permits = 0
        self.writer: threading.Thread | None = None  # not gated until it is set
        self.done = False  # the writer has made its last syscall

    def __getattr__(self, name: str):
        real = getattr(os, name)
        return (lambda *args: self._call(real, args)) if name in self.GATED else real

    def _call(self, real, args):
        with self.cond:
            if threading.current_thread() is self.writer:
                self.cond.wait_for(lambda: self.permits > 0)
                self.permits -= 1
                try:
                    return real(*args)
                finally:
                    self.cond.notify_all()
            if self.writer is not None and not self.done:
                self.permits = self.ratio
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.permits == 0 or self.done)
        return real(*args)

    def end(self) -> None:
        with self.cond:
            self.done = True
            self.cond.notify_all()


class _NoSleep:
    def __getattr__(self, name: str):
        return (lambda seconds: None) if name == "sleep" else getattr(time, name)


@pytest.mark.parametrize("ratio", [1, 2, 3, 5, 8, 40])
def test_follow_sees_every_line_once_whatever_the_interleaving(tmp_path, monkeypatch, ratio):
    """The writer rotating while the follower looks at the names, at every pace: each line once,
    in order (a look in the middle of the renames is taken again)."""
    path = str(tmp_path / "ctr.log")
    lockstep = _LockStep(ratio)
    monkeypatch.setattr(logs, "os", lockstep)
    monkeypatch.setattr(logs, "time", _NoSleep())  # the follower polls: its syscalls are what lets the writer on
    writer = logs.LogWriter(path, max_size=1024, max_files=200)
    writer.write("stdout", b"first\n")
    total = 2000

    def write_lines():
        try:
            for number in range(total):
                writer.write("stdout", b"%04d\n" % number)
            writer.close()
        finally:
            lockstep.end()

    lockstep.writer = threading.Thread(target=write_lines)
    lockstep.writer.start()
    seen = [r.text for r in logs.follow(path, lambda: lockstep.done, poll_interval=0)]
    lockstep.writer.join()
    assert seen == [b"first"] + [b"%04d" % number for number in range(total)]


def test_follow_reads_a_file_it_holds_after_it_is_deleted(tmp_path):
    """The follower holds the file it reads: rotated out and deleted behind its back, that file
    is still read whole; what it sees is in order, each line once, up to the last file."""
    path = str(tmp_path / "ctr.log")
    writer = logs.LogWriter(path, max_size=4000, max_files=2)
    written = [b"a%02d" % n for n in range(5)]
    writer.write("stdout", b"".join(text + b"\n" for text in written))
    done = threading.Event()
    records = logs.follow(path, done.is_set, poll_interval=0)
    assert next(records).text == b"a00"  # the follower holds ctr.log, which is about to go
    for batch in range(4):
        writer.rotate()
        lines = [b"c%d%02d" % (batch, n) for n in range(5)]
        written += lines
        writer.write("stdout", b"".join(text + b"\n" for text in lines))
    writer.close()
    done.set()
    seen = [b"a00"] + [r.text for r in records]
    assert not os.path.exists(path + ".2")
    assert seen[:5] == written[:5]
    assert seen[-5:] == written[-5:]
    assert seen == [text for text in written if text in seen]  # in order, none twice


def test_follow_with_tail_gives_the_last_lines_then_new_ones(tmp_path):
    path = str(tmp_path / "ctr.log")
    writer = logs.LogWriter(path)
    for text in (b"a\n", b"b\n", b"c\n"):
        writer.write("stdout", text)
    calls = []

    def done():
        calls.append(1)
        if len(calls) == 1:
            writer.write("stdout", b"d\n")
            return False
        return True

    assert [r.text for r in logs.follow(path, done, tail=1, poll_interval=0)] == [b"c", b"d"]


@pytest.mark.parametrize("text,size", [("10", 10), ("1k", 1000), ("1kb", 1000), ("2mb", 2 * 10**6), ("1.5m", 1500000),
                                       ("1KiB", 1024), ("1g", 10**9)])
def test_parse_size(text, size):
    assert logs.parse_size(text) == size


def test_log_options():
    options = logs.LogOptions.parse(["max-size=10k,max-file=3"])
    assert (options.max_size, options.max_files) == (10000, 3)
    assert logs.LogOptions.parse([]).max_size is None
    for bad in ("max-size=ten", "max-file=0", "max-file", "colour=red"):
        with pytest.raises(ManagerError, match="--log-opt"):
            logs.LogOptions.parse([bad])


def test_join_partial_per_stream():
    def record(stream, partial, text):
        return logs.Record("2026-01-01T00:00:00.000000000+00:00", stream, partial, text)

    joined = logs.join_partial([record("stdout", True, b"he"), record("stderr", False, b"e"),
                                record("stdout", True, b"ll"), record("stdout", False, b"o"),
                                record("stdout", True, b"tail")])
    assert [(r.stream, r.partial, r.text) for r in joined] == [
        ("stderr", False, b"e"), ("stdout", False, b"hello"), ("stdout", True, b"tail")]
