"""Small JSON record files shared between threads and processes (the calibration, the roofline).

A cache file is a JSON object ``{key: record}``. It lives in a directory other processes, other versions of
fastdeconv and other users' tools may write too, so everything read from it is untrusted:

* only a regular file is read, opened non-blocking (a FIFO or a device in its place never blocks the caller),
  and at most ``MAX_BYTES``; anything else is treated as an empty cache;
* parsing is guarded (malformed JSON, invalid UTF-8, nesting deep enough to exhaust the recursion limit), the
  top level must be an object and every record must pass the caller's ``valid(key, value)``;
* whatever is wrong costs one warning per file and process, never an exception, a hang or a crash.

Writes never lose another process's records: under an exclusive ``fcntl`` lock on a sibling ``<name>.lock``
file, the file is re-read from disk, the new records are merged in, and the result replaces the file
atomically (a temporary file in the same directory, then ``os.replace``), so a reader sees either the old or
the new file, never a partial one. A directory that cannot be written (read-only home, a full disk, a lock
that stays taken) leaves the merged records in memory, with one warning.
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

MAX_BYTES = 1 << 20    # a cache file is a few kB; anything past this is not one of ours
LOCK_TIMEOUT = 10.0    # seconds to wait for another process's write lock before keeping the records in memory

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


def merge_records(path: str | os.PathLike, new: Mapping, valid: Valid, keep_existing: bool = True) -> dict:
    """Add ``new`` to the cache file ``path`` without losing any record another process wrote.

    Under an exclusive lock on ``<path>.lock`` the file is re-read, the valid records of ``new`` are added
    (a key already on disk keeps its disk record when ``keep_existing``, else ``new`` replaces it) and the file
    is replaced atomically. The directory is created if needed.

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
        What is recorded now: the disk's valid records merged with ``new``. When the directory cannot be
        written, the same merge held in memory only (one warning per path and process).
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


def _update(path: Path, valid: Valid, change) -> dict:
    """Under the file lock: read the disk, ``change`` it, write it back if it changed (see merge_records)."""
    with _write_lock:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            return _in_memory(path, valid, change, exc)
        try:
            if not stat.S_ISREG(os.fstat(lock_fd).st_mode):
                return _in_memory(path, valid, change, OSError(f"{path}.lock is not a regular file"))
            if not _lock(lock_fd):
                return _in_memory(path, valid, change, OSError(f"{path}.lock stayed locked for {LOCK_TIMEOUT:g} s"))
            disk, clean = _read(path, valid)
            changed = change(disk)
            if clean and changed == disk:
                return changed  # nothing new: leave the file alone
            try:
                write_json(path, changed)
            except (OSError, TypeError, ValueError) as exc:  # (TypeError/ValueError: a record JSON cannot hold)
                _warn(path, f"fastdeconv: could not write the cache file {path} ({exc}); its records are kept "
                            "in memory for this process")
            return changed
        finally:
            os.close(lock_fd)  # (closing releases the lock)


def _merge(disk: dict, fresh: dict, keep_existing: bool) -> dict:
    merged = dict(disk)
    for k, v in fresh.items():
        if not (keep_existing and k in merged):
            merged[k] = v
    return merged


def _in_memory(path: Path, valid: Valid, change, exc: OSError) -> dict:
    _warn(path, f"fastdeconv: cannot write the cache file {path} ({exc}); its records are kept in memory for "
                "this process")
    disk, _ = _read(path, valid)
    return change(disk)


def _lock(fd: int) -> bool:
    import fcntl

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


def _read(path: Path, valid: Valid) -> tuple[dict, bool]:
    """(valid records, whether the file was missing or entirely valid)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}, True
    except OSError as exc:
        _warn(path, f"fastdeconv: ignoring the cache file {path}: cannot open it ({exc})")
        return {}, False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            _warn(path, f"fastdeconv: ignoring the cache file {path}: not a regular file")
            return {}, False
        if info.st_size > MAX_BYTES:
            _warn(path, f"fastdeconv: ignoring the cache file {path}: {info.st_size} bytes, more than {MAX_BYTES}")
            return {}, False
        chunks, size = [], 0
        while size <= MAX_BYTES:  # (the file may grow after fstat: never read more than the cap)
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        _warn(path, f"fastdeconv: ignoring the cache file {path}: cannot read it ({exc})")
        return {}, False
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        _warn(path, f"fastdeconv: ignoring the cache file {path}: more than {MAX_BYTES} bytes")
        return {}, False
    try:
        data = json.loads(b"".join(chunks).decode("utf-8"))
    except (ValueError, RecursionError, MemoryError) as exc:  # (UnicodeDecodeError is a ValueError)
        _warn(path, f"fastdeconv: ignoring the cache file {path}: not valid JSON ({type(exc).__name__})")
        return {}, False
    if not isinstance(data, dict):
        _warn(path, f"fastdeconv: ignoring the cache file {path}: not a JSON object")
        return {}, False
    records = {k: v for k, v in data.items() if _check(valid, k, v)}
    if len(records) < len(data):
        _warn(path, f"fastdeconv: ignoring {len(data) - len(records)} invalid record(s) of the cache file {path}")
        return records, False
    return records, True


def write_json(path: Path, records: dict) -> None:
    """Write ``records`` to ``path`` atomically (a temporary file in the same directory, fsynced, then
    ``os.replace``): a reader sees the old file or the new one, never a part."""
    text = json.dumps(records, indent=1, sort_keys=True, allow_nan=False)
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
