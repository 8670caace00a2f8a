"""Small JSON record files shared between threads and processes (the calibration, the roofline).

A cache file is a JSON object ``{key: record}``. It lives in a directory other processes, other versions of
fastdeconv and other users' tools may write too, so everything read from it is untrusted:

* only a regular file is read, opened non-blocking (a FIFO or a device in its place never blocks the caller),
  and at most ``MAX_BYTES``; anything else is treated as an empty cache;
* parsing is guarded (malformed JSON, invalid UTF-8, nesting deep enough to exhaust the recursion limit), the
  top level must be an object and every record must pass the caller's ``valid(key, value)``;
* whatever is wrong costs one warning per file and process, never an exception, a hang or a crash.

Writes never lose another process's records: under an exclusive ``fcntl`` lock on a sibling ``<name>.lock``
file (opened with ``O_NOFOLLOW``: a symbolic link there, dangling or not, is refused, never followed), the file is
re-read from disk, the new records are merged in, and the result replaces the file atomically (a temporary file
in the same directory, then ``os.replace``), so a reader sees either the old or the new file, never a partial
one. A directory that cannot be written (read-only home, a full disk, a lock that stays taken) leaves the merged
records in memory, with one warning. Under the lock, temporary files of this cache file older than
``STALE_TMP_SECONDS`` (left by a writer killed between creating and renaming its temporary file) are removed.

The file stays under its read cap: records are kept in the order they were first recorded (the JSON object's
order; a replaced record counts as new), and a write that would pass ``WRITE_BYTES`` drops the oldest records
until it fits. A write that replaces a file it could not read (not JSON, too large, not a regular file, invalid
records) says so with a warning every time, naming what is lost.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import platform
import stat
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from . import _interrupts

MAX_BYTES = 1 << 20    # a cache file is a few kB; anything past this is not one of ours
WRITE_BYTES = 3 * MAX_BYTES // 4  # a write keeps the newest records that fit in this (a margin below the cap)
LOCK_TIMEOUT = 10.0    # seconds to wait for another process's write lock before keeping the records in memory
STALE_TMP_SECONDS = 600.0  # a temporary file of a cache file this old, seen under the lock, is a killed writer's

Valid = Callable[[str, object], bool]

_warned: set[str] = set()
_warned_lock = threading.Lock()
_write_lock = threading.Lock()  # fcntl locks are per process: threads of one process take this one first


@functools.cache
def cpu_info() -> dict[str, str]:
    """The fields of the first CPU in Linux's /proc/cpuinfo (``model name``, ``vendor_id``, ``flags``, ...);
    empty elsewhere or when unreadable."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # the end of the first CPU's block
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    """The CPU model and core count: the part of a cache key that says which machine measured a record."""
    name = cpu_info().get("model name") or platform.processor() or platform.machine()
    return f"{name} x{os.cpu_count()}"


def cache_dir() -> Path:
    """The directory of fastdeconv's cache files: ``$FASTDECONV_CACHE_DIR``, else ``~/.cache/fastdeconv``.

    Returns
    -------
    pathlib.Path
        Not created here (the first write creates it).
    """
    root = os.environ.get("FASTDECONV_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fastdeconv")
    return Path(root)


def read_records(path: str | os.PathLike, valid: Valid) -> dict:
    """The valid records of the JSON cache file ``path`` (``{}`` when it is missing, unreadable or bad).

    Parameters
    ----------
    path : str or os.PathLike
        The cache file.
    valid : callable
        ``valid(key, value) -> bool``; records for which it is false (or raises) are dropped.

    Returns
    -------
    dict
        ``{key: record}``. A file that is not a regular file, larger than ``MAX_BYTES``, not JSON, not a JSON
        object, or that holds invalid records gives one warning per path and process, never an exception.
    """
    records, _ = _read(Path(path), valid)
    return records


def read_file(path: str | os.PathLike, valid: Valid) -> tuple[dict, str | None]:
    """The valid records of ``path`` and what was wrong with it (None: nothing), without any warning.

    For a file given explicitly (an import): the caller reports the problem. A missing file raises
    ``FileNotFoundError``.
    """
    path = Path(path)
    if not os.path.exists(path):  # (a dangling symbolic link included)
        raise FileNotFoundError(f"path {str(path)!r} does not exist")
    return _read(path, valid, warn=False)


def output_problem(path: str | os.PathLike) -> str | None:
    """Why a file fastdeconv writes on request (an export, a report) may not replace ``path``, or None.

    Allowed: a regular file, a symbolic link to one, or a name that does not exist yet. Refused: a directory, a
    FIFO, a device, a socket, a symbolic link to any of them, and a dangling symbolic link (writing there would
    create its target, wherever it points).

    Parameters
    ----------
    path : str or os.PathLike
        The path to be written.

    Returns
    -------
    str or None
        The reason, phrased to follow the path (``f"{path} {reason}"``).
    """
    name = os.fspath(path)
    try:
        info = os.lstat(name)
    except (FileNotFoundError, NotADirectoryError):
        return None  # a new name (a missing directory fails the write itself, with its own error)
    except OSError as exc:
        return f"cannot be inspected ({exc.strerror or exc})"
    what = "is"
    if stat.S_ISLNK(info.st_mode):
        try:
            info = os.stat(name)
        except FileNotFoundError:
            return "is a dangling symbolic link; give a regular file or a new file name"
        except OSError as exc:
            return f"is a symbolic link that cannot be followed ({exc.strerror or exc})"
        what = "is a symbolic link to"
    mode = info.st_mode
    if stat.S_ISREG(mode):
        return None
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "not a regular file")
    return f"{what} {kind}; give a regular file or a new file name"


def write_bounded(path: str | os.PathLike, records: dict) -> tuple[dict, int]:
    """Write ``records`` (oldest first) to ``path`` atomically, without the oldest ones when they would exceed
    ``WRITE_BYTES``, so that ``read_records`` reads the file back. No lock: for a file of the caller's own (an
    export), not a shared cache file. A symbolic link at ``path`` is written through (the link stays).

    Returns
    -------
    (dict, int)
        The records written and how many of the oldest were left out.
    """
    kept, text, dropped = _bounded(records)
    _write_text(Path(os.path.realpath(path)), text)
    return kept, dropped


def merge_records(path: str | os.PathLike, new: Mapping, valid: Valid, keep_existing: bool = True) -> dict:
    """Add ``new`` to the cache file ``path`` without losing any record another process wrote.

    Under an exclusive lock on ``<path>.lock`` the file is re-read, the valid records of ``new`` are added
    (a key already on disk keeps its disk record when ``keep_existing``, else ``new`` replaces it and counts as
    new) and the file is replaced atomically, without its oldest records if it would exceed ``WRITE_BYTES``. The
    directory is created if needed.

    Parameters
    ----------
    path : str or os.PathLike
        The cache file.
    new : mapping
        ``{key: record}`` to add; invalid records are dropped.
    valid : callable
        ``valid(key, value) -> bool``, applied to the disk's records and to ``new``.
    keep_existing : bool, default True
        Whether a key already recorded on disk keeps its record (the first recorded decision wins).

    Returns
    -------
    dict
        What is recorded now: the disk's valid records merged with ``new``, oldest first (the oldest dropped when
        they would not fit). When the directory cannot be written, the same merge held in memory only (one
        warning per path and process).
    """
    path = Path(path)
    if not isinstance(new, Mapping):
        raise TypeError(f"new must be a mapping of records, got {type(new).__name__}")
    fresh = {k: v for k, v in new.items() if isinstance(k, str) and _check(valid, k, v)}
    return _update(path, valid, lambda disk: _merge(disk, fresh, keep_existing))


def remove_records(path: str | os.PathLike, valid: Valid, keys=None) -> dict:
    """Remove ``keys`` (every record when None) from the cache file ``path``, under its lock.

    Parameters
    ----------
    path : str or os.PathLike
        The cache file.
    valid : callable
        ``valid(key, value) -> bool`` for the records that stay.
    keys : iterable of str, optional
        The keys to remove; None removes all.

    Returns
    -------
    dict
        What is recorded now (in memory only when the directory cannot be written, with one warning).
    """
    drop = None if keys is None else set(keys)
    return _update(Path(path), valid, lambda disk: {} if drop is None else
                   {k: v for k, v in disk.items() if k not in drop})


# ------------------------------------------------------------------------------------------------ internals


def _check(valid: Valid, key, value) -> bool:
    try:
        return bool(valid(key, value))
    except Exception:  # a validator tripping over a hostile record rejects it
        return False


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _update(path: Path, valid: Valid, change) -> dict:
    """Under the file lock: read the disk, ``change`` it, write it back if it changed (see merge_records)."""
    with _write_lock:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | _NOFOLLOW,
                              0o644)
        except OSError as exc:  # (ELOOP: the lock is a symbolic link)
            return _in_memory(path, valid, change, exc)
        try:
            if not stat.S_ISREG(os.fstat(lock_fd).st_mode):
                return _in_memory(path, valid, change, OSError(f"{path}.lock is not a regular file"))
            if not _lock(lock_fd):
                return _in_memory(path, valid, change, OSError(f"{path}.lock stayed locked for {LOCK_TIMEOUT:g} s"))
            _remove_stale_temporaries(path)
            disk, problem = _read(path, valid)
            changed = change(disk)
            if problem is None and changed == disk:
                return changed  # nothing new: leave the file alone
            try:
                changed, text, _ = _bounded(changed)
                _write_text(path, text)
            except (OSError, TypeError, ValueError) as exc:  # (TypeError/ValueError: a record JSON cannot hold)
                _warn(path, f"fastdeconv: could not write the cache file {path} ({exc}); its records are kept "
                            "in memory for this process")
                return changed
            if problem is not None:  # every time: this write has just destroyed what it could not read
                warnings.warn(f"fastdeconv: rewrote the cache file {path} without what it could not read ({problem})",
                              RuntimeWarning, stacklevel=3)
            return changed
        finally:
            os.close(lock_fd)  # (closing releases the lock)


def _merge(disk: dict, fresh: dict, keep_existing: bool) -> dict:
    merged = dict(disk)
    for k, v in fresh.items():
        if not (keep_existing and k in merged):
            merged.pop(k, None)  # a replaced record counts as new: it moves to the end (the newest)
            merged[k] = v
    return merged


def _dumps(records: dict) -> str:
    return json.dumps(records, indent=1, allow_nan=False)  # (no sort_keys: the order is the records' age)


def _bounded(records: dict, limit: int | None = None) -> tuple[dict, str, int]:
    """(the newest records whose JSON text fits ``limit`` bytes (``WRITE_BYTES``), that text, how many of the
    oldest were dropped). ``records`` are oldest first."""
    limit = WRITE_BYTES if limit is None else limit
    text = _dumps(records)
    if len(text.encode("utf-8")) <= limit:
        return records, text, 0
    keys = list(records)
    room, keep = limit - 2, 0  # ("{" and "}" around the records)
    for k in reversed(keys):  # newest first: each record's share of the text (its lines, one more indent)
        size = len(_dumps({k: records[k]}).encode("utf-8")) + 2
        if size > room:
            break
        room -= size
        keep += 1
    while True:
        kept = {k: records[k] for k in keys[len(keys) - keep:]} if keep else {}
        text = _dumps(kept)
        if len(text.encode("utf-8")) <= limit or not kept:
            return kept, text, len(keys) - keep
        keep -= 1


def _remove_stale_temporaries(path: Path) -> None:
    """Remove this cache file's temporary files (``.<name>-*.tmp``) older than ``STALE_TMP_SECONDS``: under the
    lock no writer of ours is between creating one and renaming it, so an old one was left by a killed write."""
    prefix, now = f".{path.name}-", time.time()
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        tmp = path.parent / name
        try:
            info = os.lstat(tmp)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > STALE_TMP_SECONDS:
                os.unlink(tmp)
        except OSError:  # gone meanwhile, or not ours to remove
            continue


def _in_memory(path: Path, valid: Valid, change, exc: OSError) -> dict:
    _warn(path, f"fastdeconv: cannot write the cache file {path} ({exc}); its records are kept in memory for "
                "this process")
    disk, _ = _read(path, valid)
    return change(disk)


def _lock(fd: int) -> bool:
    fcntl = _interrupts.import_module("fcntl")

    deadline = time.monotonic() + LOCK_TIMEOUT
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK) or time.monotonic() > deadline:
                return False
        time.sleep(delay)
        delay = min(2 * delay, 0.05)


def _read(path: Path, valid: Valid, warn: bool = True) -> tuple[dict, str | None]:
    """(valid records, what was wrong with the file: None when it was missing or entirely valid). With ``warn``
    the problem is also a warning (once per path and process)."""
    records, problem = _parse(path, valid)
    if problem is not None and warn:
        if records:
            _warn(path, f"fastdeconv: ignoring {problem} of the cache file {path}")
        else:
            _warn(path, f"fastdeconv: ignoring the cache file {path}: {problem}")
    return records, problem


def _parse(path: Path, valid: Valid) -> tuple[dict, str | None]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {}, f"cannot open it ({exc})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return {}, "not a regular file"
        if info.st_size > MAX_BYTES:
            return {}, f"{info.st_size} bytes, more than {MAX_BYTES}"
        chunks, size = [], 0
        while size <= MAX_BYTES:  # (the file may grow after fstat: never read more than the cap)
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        return {}, f"cannot read it ({exc})"
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        return {}, f"more than {MAX_BYTES} bytes"
    try:
        data = json.loads(b"".join(chunks).decode("utf-8"))
    except (ValueError, RecursionError, MemoryError) as exc:  # (UnicodeDecodeError is a ValueError)
        return {}, f"not valid JSON ({type(exc).__name__})"
    if not isinstance(data, dict):
        return {}, "not a JSON object"
    records = {k: v for k, v in data.items() if _check(valid, k, v)}
    if len(records) < len(data):
        return records, f"{len(data) - len(records)} invalid record(s)"
    return records, None


def write_json(path: Path, records: dict) -> None:
    """Write ``records`` to ``path`` atomically (a temporary file in the same directory, fsynced, then
    ``os.replace``): a reader sees the old file or the new one, never a part."""
    _write_text(path, _dumps(records))


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o644)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _warn(path: Path, message: str) -> None:
    """One warning per cache file and process."""
    name = os.path.abspath(path)
    with _warned_lock:
        if name in _warned:
            return
        _warned.add(name)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
