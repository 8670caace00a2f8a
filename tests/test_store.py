"""Safe JSON cache files (``_store``): hostile content never raises or hangs, and no writer loses a record."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import within

import fastdeconv
from fastdeconv import _store

TIMEOUT = 20.0  # seconds any single read or write may take, however hostile the file


def _valid(key, value):
    return isinstance(value, dict) and isinstance(value.get("n"), int) and not isinstance(value["n"], bool)


def _within(fn, *args):
    """``fn(*args)`` and its warnings; fail (instead of hanging the suite) if it takes over TIMEOUT."""
    return within(TIMEOUT, fn, *args)


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTDECONV_CACHE_DIR", str(tmp_path))
    assert _store.cache_dir() == tmp_path
    monkeypatch.delenv("FASTDECONV_CACHE_DIR")
    assert _store.cache_dir() == Path.home() / ".cache" / "fastdeconv"


def test_round_trip_and_missing_file(tmp_path):
    path = tmp_path / "sub" / "c.json"
    assert _within(_store.read_records, path, _valid) == ({}, [])  # missing: empty, no warning
    merged, caught = _within(_store.merge_records, path, {"a": {"n": 1}, "bad": {"n": "x"}}, _valid)
    assert merged == {"a": {"n": 1}} and caught == []  # an invalid new record is dropped, not written
    assert json.loads(path.read_text()) == {"a": {"n": 1}}
    assert _store.read_records(path, _valid) == {"a": {"n": 1}}
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def test_keep_existing(tmp_path):
    path = tmp_path / "c.json"
    _store.merge_records(path, {"a": {"n": 1}}, _valid)
    assert _store.merge_records(path, {"a": {"n": 2}, "b": {"n": 3}}, _valid) == {"a": {"n": 1}, "b": {"n": 3}}
    assert _store.merge_records(path, {"a": {"n": 2}}, _valid, keep_existing=False)["a"] == {"n": 2}
    assert _store.read_records(path, _valid) == {"a": {"n": 2}, "b": {"n": 3}}


def test_new_must_be_a_mapping(tmp_path):
    with pytest.raises(TypeError, match="new must be a mapping"):
        _store.merge_records(tmp_path / "c.json", [("a", {"n": 1})], _valid)


def _deep(n):
    return "[" * n + "]" * n


CORRUPT = {
    "wrong schema": lambda p: p.write_text(json.dumps({"k": {"variant": ["x"], "seconds": {"x": 1.0}}})),
    "deep nesting": lambda p: p.write_text('{"k": ' + _deep(100_000) + "}"),
    "deep top level": lambda p: p.write_text(_deep(100_000)),
    "not an object": lambda p: p.write_text("[1, 2, 3]"),
    "truncated": lambda p: p.write_text('{"a": {"n": 1'),
    "binary garbage": lambda p: p.write_bytes(bytes(range(256)) * 16),
    "invalid utf-8": lambda p: p.write_bytes(b'{"\xff\xfe": {"n": 1}}'),
    "huge": lambda p: p.write_text('{"a": {"n": 1}, "pad": "' + "x" * (_store.MAX_BYTES + 10) + '"}'),
    "directory": lambda p: p.mkdir(),
    "fifo": lambda p: os.mkfifo(p),
    "huge integer": lambda p: p.write_text('{"a": {"n": ' + "9" * 50_000 + "}}"),
    "validator raises": lambda p: p.write_text('{"a": {"n": 1}, "b": 7}'),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_file_is_ignored_with_one_warning(tmp_path, case):
    path = tmp_path / "c.json"
    CORRUPT[case](path)

    def strict(key, value):  # raises on a non-dict: a raising validator only rejects the record
        return isinstance(value["n"], int)

    records, caught = _within(_store.read_records, path, strict)
    assert records in ({}, {"a": {"n": 1}}), records
    assert len(caught) == 1 and str(path) in caught[0], caught
    # same path again: silent (one warning per path and process), still no exception
    records, caught = _within(_store.read_records, path, strict)
    assert caught == []
    # a write after it: never raises or hangs; the new record is in the result (on disk when the path allows),
    # and a write that replaces what it could not read says so (every time, not once per path)
    merged, caught = _within(_store.merge_records, path, {"z": {"n": 9}}, strict)
    assert merged["z"] == {"n": 9}
    if case != "directory":
        assert len(caught) == 1 and str(path) in caught[0] and "without what it could not read" in caught[0], caught
        assert _store.read_records(path, strict)["z"] == {"n": 9}
    else:  # (nothing replaced: the directory stays, the records live in memory; already warned about this path)
        assert caught == []


def test_fifo_lock_file_does_not_block(tmp_path):
    path = tmp_path / "c.json"
    os.mkfifo(f"{path}.lock")
    merged, caught = _within(_store.merge_records, path, {"a": {"n": 1}}, _valid)
    assert merged == {"a": {"n": 1}} and len(caught) == 1


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories")
def test_unwritable_directory_keeps_records_in_memory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    path = ro / "c.json"
    path.write_text(json.dumps({"old": {"n": 0}}))
    ro.chmod(0o555)
    try:
        merged, caught = _within(_store.merge_records, path, {"a": {"n": 1}}, _valid)
        assert merged == {"old": {"n": 0}, "a": {"n": 1}} and len(caught) == 1
        merged, caught = _within(_store.merge_records, path, {"b": {"n": 2}}, _valid)
        assert merged["b"] == {"n": 2} and caught == []  # one warning per path
        assert json.loads(path.read_text()) == {"old": {"n": 0}}
    finally:
        ro.chmod(0o755)


def test_threads_never_lose_a_record(tmp_path):
    path = tmp_path / "c.json"
    threads = [threading.Thread(target=lambda i=i: [_store.merge_records(path, {f"t{i}-{j}": {"n": j}}, _valid)
                                                    for j in range(10)]) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(_store.read_records(path, _valid)) == 80


WRITER = """
import sys
from fastdeconv import _store
valid = lambda k, v: isinstance(v, dict) and isinstance(v.get("n"), int)
for j in range(5):
    _store.merge_records(sys.argv[1], {f"p{sys.argv[2]}-{j}": {"n": j}}, valid)
"""


def test_spawned_processes_never_lose_a_record(tmp_path):
    path = tmp_path / "c.json"
    env = dict(os.environ, PYTHONPATH=str(Path(fastdeconv.__file__).parent.parent))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(i)], env=env) for i in range(4)]
    try:
        assert [p.wait(timeout=120) for p in procs] == [0] * 4
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    records = _store.read_records(path, _valid)
    assert sorted(records) == sorted(f"p{i}-{j}" for i in range(4) for j in range(5))


def test_directory_that_cannot_be_created_keeps_records_in_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    path = blocker / "cache" / "c.json"  # (runs as root too: nobody can create a directory inside a file)
    merged, caught = _within(_store.merge_records, path, {"a": {"n": 1}}, _valid)
    assert merged == {"a": {"n": 1}} and len(caught) == 1 and str(path) in caught[0]
    assert _within(_store.read_records, path, _valid) == ({}, [])  # (already warned about this path)


def test_a_lock_that_stays_taken_keeps_records_in_memory(tmp_path, monkeypatch):
    import fcntl

    path = tmp_path / "c.json"
    monkeypatch.setattr(_store, "LOCK_TIMEOUT", 0.2)
    holder = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # (another open file description: conflicts even within this process)
    try:
        merged, caught = _within(_store.merge_records, path, {"a": {"n": 1}}, _valid)
        assert merged == {"a": {"n": 1}} and len(caught) == 1 and "locked" in caught[0]
        assert not path.exists()
    finally:
        os.close(holder)
    assert _store.merge_records(path, {"b": {"n": 2}}, _valid) == {"b": {"n": 2}}  # free again: written
    assert _store.read_records(path, _valid) == {"b": {"n": 2}}


def test_records_stay_under_the_read_cap_oldest_out(tmp_path):
    """Merges far past the read cap keep the file readable: the newest records stay, the oldest go (before, the
    file grew past the cap, and the next write, reading nothing, replaced it with only its own records)."""
    path = tmp_path / "c.json"
    batch = 12_000  # ~40 bytes each on disk: three batches pass MAX_BYTES
    for b in range(5):
        merged, caught = _within(_store.merge_records, path, {f"batch{b}-{j:05d}": {"n": j} for j in range(batch)},
                                 _valid)
        assert caught == [] and path.stat().st_size <= _store.MAX_BYTES
        assert all(f"batch{b}-{j:05d}" in merged for j in range(batch))  # the newest are all kept
    on_disk = _store.read_records(path, _valid)
    assert on_disk == merged and len(on_disk) > 1.5 * batch  # bounded, not reset
    assert "batch0-00000" not in on_disk and "batch4-00000" in on_disk  # oldest out
    # a replaced record counts as new: it survives the next eviction, which takes the oldest first
    survivor = next(iter(on_disk))
    _store.merge_records(path, {survivor: {"n": -1}}, _valid, keep_existing=False)
    after = _store.merge_records(path, {f"batch5-{j:05d}": {"n": j} for j in range(batch)}, _valid)
    assert after[survivor] == {"n": -1} and path.stat().st_size <= _store.MAX_BYTES


def test_each_write_over_an_unreadable_file_says_so(tmp_path):
    """Every write that replaces content it could not read warns, naming the problem; not once per path only."""
    path = tmp_path / "c.json"
    for round_ in range(2):
        path.write_text(json.dumps({"good": {"n": 1}, "bad": {"n": "x"}, "worse": 3}))
        merged, caught = _within(_store.merge_records, path, {f"new{round_}": {"n": 2}}, _valid)
        assert merged["good"] == {"n": 1} and merged[f"new{round_}"] == {"n": 2}
        assert any("without what it could not read (2 invalid record(s))" in c for c in caught), caught
    path.write_bytes(b"\x00" * 100)
    merged, caught = _within(_store.merge_records, path, {"x": {"n": 3}}, _valid)
    assert merged == {"x": {"n": 3}} and any("not valid JSON" in c for c in caught), caught
    merged, caught = _within(_store.merge_records, path, {"y": {"n": 4}}, _valid)
    assert merged == {"x": {"n": 3}, "y": {"n": 4}} and caught == []  # a readable file: nothing to say


def test_stale_temporary_files_are_removed_under_the_lock(tmp_path):
    """A write killed between creating its temporary file and renaming it leaves ``.<name>-*.tmp``: the next
    write removes those older than STALE_TMP_SECONDS (a fresh one may be another writer's), and nothing else."""
    import time

    path = tmp_path / "c.json"
    old, fresh = tmp_path / ".c.json-dead1234.tmp", tmp_path / ".c.json-live5678.tmp"
    other, linked = tmp_path / ".other.json-dead9999.tmp", tmp_path / ".c.json-link0000.tmp"
    for p in (old, fresh, other):
        p.write_text("{")
    linked.symlink_to(other)
    past = time.time() - _store.STALE_TMP_SECONDS - 60
    for p in (old, other):
        os.utime(p, (past, past))
    os.utime(linked, (past, past), follow_symlinks=False)
    _store.merge_records(path, {"a": {"n": 1}}, _valid)
    assert not old.exists() and fresh.exists() and other.exists() and linked.is_symlink()
    assert _store.read_records(path, _valid) == {"a": {"n": 1}}


def test_a_symlinked_lock_file_is_not_followed(tmp_path):
    """The lock is opened with O_NOFOLLOW: a dangling symlink in its place does not create its target (and a
    link to an existing file does not lock or truncate it); the records stay in memory with one warning."""
    path = tmp_path / "c.json"
    target = tmp_path / "elsewhere" / "created-by-the-lock"
    target.parent.mkdir()
    os.symlink(target, f"{path}.lock")
    merged, caught = _within(_store.merge_records, path, {"a": {"n": 1}}, _valid)
    assert merged == {"a": {"n": 1}} and len(caught) == 1 and str(path) in caught[0]
    assert not target.exists() and not path.exists()


def test_output_problem_allows_only_regular_files_and_new_names(tmp_path):
    regular = tmp_path / "r.json"
    regular.write_text("{}")
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    links = {"to-regular": regular, "to-fifo": tmp_path / "fifo", "to-dir": tmp_path / "dir",
             "dangling": tmp_path / "missing"}
    for name, target in links.items():
        (tmp_path / name).symlink_to(target)
    assert _store.output_problem(regular) is None
    assert _store.output_problem(tmp_path / "new.json") is None
    assert _store.output_problem(tmp_path / "to-regular") is None
    expected = {"dir": "is a directory", "fifo": "is a FIFO", "to-fifo": "is a symbolic link to a FIFO",
                "to-dir": "is a symbolic link to a directory", "dangling": "is a dangling symbolic link"}
    for name, words in expected.items():
        assert words in (_store.output_problem(tmp_path / name) or ""), name
    if os.path.exists("/dev/null"):
        assert "is a device" in _store.output_problem("/dev/null")
