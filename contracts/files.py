"""Writing files: the one way every stage does it, so that a kill, a full disk or a second process never
leaves a half-written or doubled result.

- **Atomic** (:func:`write_text`, :func:`write_bytes`, :func:`write_json`; :func:`written` for a library
  that writes to a path of its own — a CSV, a figure, safetensors; :func:`atomic_dir` for a directory):
  the data goes to a temporary name beside the target, unique per host and process (several machines may
  share a run directory), is flushed to disk, and is renamed over the target; a failure removes it.
- **Appending whole lines** (:class:`Appender`): a JSONL or CSV file grows by whole lines only, each
  flushed as it is written; a write that fails is cut back to where it started.
- **Out of space**: every write here turns ENOSPC / EDQUOT into :class:`OutOfSpace`, a user error naming
  the path (the CLI prints it as one line and exits 2); :func:`out_of_space` makes the same message for
  an OSError raised inside a library.
- **One writer per output** (:class:`Lock`): an exclusive ``flock`` on a lock file beside the output; it
  dies with its process, so a killed run never blocks the next. flock is reliable on local file systems;
  on NFS it depends on the server (NFSv4 supports it); on other network file systems run one writer by
  hand.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from contracts.errors import UserError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
RERUN = "free space and rerun the same command: what was finished is kept"


class OutOfSpace(UserError):
    """A write failed for want of space; what was written before is intact."""


def out_of_space(path: str | Path | None, needed: int | None = None) -> OutOfSpace:
    need = f" (about {_size(needed)} needed)" if needed else ""
    return OutOfSpace(f"{path or 'a file'}: no space left on the device{need}; {RERUN}")


def is_out_of_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in NO_SPACE


def find_out_of_space(e: BaseException | None, depth: int = 0) -> OSError | None:
    """The ENOSPC / EDQUOT OSError behind ``e``, if any: ``e`` itself, its cause or context, or one of the
    per-process failures a library gathered (torch.distributed.checkpoint's CheckpointException)."""
    if e is None or depth > 8:
        return None
    if is_out_of_space(e):
        return e
    inner = [e.__cause__, e.__context__]
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict):
        inner += [f[0] if isinstance(f, tuple) else f for f in failures.values()]
    return next((x for x in (find_out_of_space(i, depth + 1) for i in inner if isinstance(i, BaseException)) if x),
                None)


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def tmp_path(path: str | Path) -> Path:
    """A temporary name beside ``path``, unique to this host and process."""
    p = Path(path)
    return p.with_name(f"{p.name}.{socket.gethostname()}.{os.getpid()}.tmp")


@contextlib.contextmanager
def no_space_as_user_error(path: str | Path, needed: int | None = None) -> Iterator[None]:
    """ENOSPC / EDQUOT raised in the block becomes :class:`OutOfSpace` naming ``path``."""
    try:
        yield
    except OSError as e:
        if is_out_of_space(e):
            raise out_of_space(path, needed) from e
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def written(path: str | Path, *, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to (by any means); on success it is flushed and
    renamed over ``path``, on failure removed. Out of space → :class:`OutOfSpace`."""
    path = Path(path)
    tmp = tmp_path(path)
    with no_space_as_user_error(path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            yield tmp
            _fsync(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    with written(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj, **kw) -> Path:
    kw.setdefault("indent", 2)
    return write_text(path, json.dumps(obj, **kw) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, needed: int | None = None, keep_tmp: bool = False) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it replaces ``path`` (an existing one is moved aside
    first and removed after), on failure it is removed (``keep_tmp``: left for the caller)."""
    path = Path(path)
    tmp = tmp_path(path)
    with no_space_as_user_error(path, needed):
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            yield tmp
        except BaseException:
            if not keep_tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = path.with_name(f"{path.name}.old.{os.getpid()}") if path.exists() else None
        if old is not None:
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


class Appender:
    """Append whole lines to a file (JSONL records or CSV rows), each flushed to the OS as it is written.

    A write that fails (a full disk) is cut back to the file's length before it, so the file never ends
    in half a line; a last line that an earlier, killed writer left without its newline gets one first.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with no_space_as_user_error(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(self._fd).st_size
            if size:
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        self.write_text("\n")  # never glue a new record onto a previous last line

    def write_text(self, text: str) -> None:
        data, start = text.encode("utf-8"), os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[_write(self._fd, view):]
        except OSError as e:
            os.ftruncate(self._fd, start)
            if is_out_of_space(e):
                raise out_of_space(self.path, len(data)) from e
            raise

    def write(self, record: dict) -> None:
        """One JSON record as one line."""
        self.write_text(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Appender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_write: Callable[[int, memoryview], int] = os.write  # the one system call that appends (tests make it fail)


class Lock:
    """An exclusive lock on an output, held by this process until :meth:`release` (or its end).

    ``path`` is the output (a file or a directory); the lock file is ``.<name>.lock`` beside it, so the
    output itself holds only results. It says who holds it (pid, host, command), which a second process
    names when it refuses to start; it is removed on release (a killed holder leaves it behind, unlocked:
    the next writer takes it over).
    """

    def __init__(self, path: str | Path, *, what: str = ""):
        p = Path(path).absolute()
        self.file = p.with_name(f".{p.name}.lock")
        self.what = what or str(p)
        self._fd = None
        with no_space_as_user_error(self.file):
            self.file.parent.mkdir(parents=True, exist_ok=True)
            while self._fd is None:
                self._fd = self._take()

    def _take(self) -> int | None:
        """The locked file's descriptor; None when the file was removed under us (take it again)."""
        import fcntl
        import sys

        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UserError(f"{self.what} is being written by another process ({holder}); wait for it to finish "
                            f"or stop it, then rerun (lock: {self.file})") from None
        try:
            same = os.stat(self.file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its holder released and removed it between our open and our flock
            os.close(fd)
            return None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        return fd

    def release(self) -> None:
        if self._fd is not None:
            self.file.unlink(missing_ok=True)  # while still held: nobody can take the removed file
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        h = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        h = {}
    return (f"pid {h.get('pid', '?')} on {h.get('host', '?')} since {h.get('since', '?')}: {h.get('command', '?')}"
            if h else "holder unknown")
