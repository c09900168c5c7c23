"""An append-only JSON Lines file that never keeps half a batch: shared by the `jsonl` sink
and the dead-letter file.

Each batch is written with one `write()` to a file opened with `O_APPEND`. If that write
fails part way (disk full), the file is truncated back to where the batch began. If the
process dies mid-write, the next opening cuts the torn last line off, so readers only ever
see whole lines. Size-based rotation renames `file` to `file.1` (`file.1` to `file.2`, ...)
before a batch that would push it over `max_bytes`.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

__all__ = ["JsonlFile", "dumps_line", "dumps_line_json"]


# Kept out of orjson's own handling, for `str()` as `json` gives them: datetimes and dataclasses
# (orjson would write them its way), str/int/dict/list subclasses are written as their base.
_ORJSON_OPTIONS = (
    orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def dumps_line(obj: Any) -> bytes:
    """One JSON object as a UTF-8 line; values JSON cannot express are written as strings.

    orjson writes it (about 10x faster than `json`, which matters at a dispatcher's thousands
    of events per second); what orjson refuses (keys that are not strings, integers past 64
    bits, lone surrogates) is written by the json module, as before. The two differ only where
    `json` wrote something that is not JSON (NaN and infinities: orjson writes null) or leaned on
    `str()` (an Enum member: orjson writes its value), and in the spelling of some floats
    (`1e-07` and `1e-7`, the same number).
    """
    try:
        return orjson.dumps(obj, default=str, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError
        return dumps_line_json(obj)


def dumps_line_json(obj: Any) -> bytes:
    """`dumps_line` with the json module only.

    A string holding a lone surrogate (`"\\ud800"` in a body or a header, which JSON allows and
    the decoders keep) has no UTF-8: the whole line is then written with ASCII escapes, valid
    JSON that reads back the same. It made the line, and the dead letter written for it, fail
    for ever: the event stayed pending, and the others of its batch with it.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        return text.encode() + b"\n"
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":"), default=str).encode("ascii") + b"\n"


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def file_problem(path: str | os.PathLike[str], *, pipes: bool = False) -> str | None:
    """Why `path` cannot be created or appended to as a file, or None if it can: checked
    before a command or a sink starts, so the user hears it at once and not from every batch.
    Creates missing parent folders, as writing would; an existing file is left as it is.

    The reason reads after the path: "is a directory; ...", "cannot be created: ...".

    `pipes`: a pipe (/dev/stdout in a container, a named pipe) is taken as it is, without the
    open-and-close check, which would hand its reader an end of file; `JsonlFile` then fails
    a batch, rather than wait, while nobody reads it. Otherwise a pipe is refused.
    """
    given = Path(path)
    absolute = Path(os.path.abspath(given))
    if absolute.is_dir():
        return f"is a directory; give a file path, e.g. {given / 'events.jsonl'}"
    if absolute.is_socket():
        return "is a socket, which cannot be opened as a file; give a file path"
    if absolute.is_fifo():
        if pipes:
            return None
        return (
            "is a pipe; give a file, or a device such as /dev/null (a write to a pipe would "
            "wait for as long as nothing reads it)"
        )
    existing = _nearest_existing(absolute.parent)
    if not existing.is_dir():
        return f"cannot be created: {existing} is a file, not a directory; choose another path"
    try:
        absolute.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot be created: making its directory failed ({exc.strerror})"
    existed = absolute.exists()
    try:
        # Append mode: an existing file is neither truncated nor changed by the check.
        with absolute.open("ab"):
            pass
    except OSError as exc:
        return f"cannot be written ({exc.strerror})"
    if not existed:
        absolute.unlink(missing_ok=True)
    return None


class JsonlFile:
    """Append whole batches of lines to `path` atomically (see the module docstring).

    Args:
        path: The file; parent directories are created.
        max_bytes: Rotate before the file would exceed this size (0: never rotate).
        backups: Rotated files kept (`path.1` newest ... `path.N` oldest).
        fsync: Call `fsync` after each batch (survives power loss, costs a disk flush).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 0,
        backups: int = 5,
        fsync: bool = False,
    ) -> None:
        # Refused here, not at the first write, where a dispatcher found out only as it
        # dead-lettered (trial 157). Whether the file can be written is the first write's.
        if not os.fspath(path):
            raise ValueError("a JSON Lines file needs a path, got an empty one")
        if Path(path).is_dir():
            raise ValueError(f"{os.fspath(path)!r} is a directory, not a file to write lines to")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self._fd: int | None = None
        self._size = 0
        # A device (/dev/null to discard): written to, never rotated, truncated or repaired.
        # Rotating renames the path: as root, that would move /dev/null away and leave a
        # regular file in its place.
        self._regular = True
        self._inode = (0, 0)  # (st_dev, st_ino) of the open file
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is not None and self._regular and not self._still_at_path():
            # Deleted or replaced under us (an operator's rm, logrotate's move): lines written
            # to the open descriptor would go to a file no path reaches any more, lost while
            # counted as written. Open what the path names now (or fail, if it cannot be).
            self.close()
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                pipe = stat.S_ISFIFO(os.stat(self.path).st_mode)
            except OSError:
                pipe = False
            # A pipe is opened without waiting: ENXIO (a failed batch, retried) while nobody
            # reads it, where a plain open would wait for ever, deaf to SIGTERM. Its writes
            # then wait for the reader as usual.
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_NONBLOCK if pipe else 0)
            fd = os.open(self.path, flags, 0o640)
            if pipe:
                os.set_blocking(fd, True)
            info = os.fstat(fd)
            self._inode = (info.st_dev, info.st_ino)
            self._regular = stat.S_ISREG(info.st_mode)
            self._size = info.st_size if self._regular else 0
            self._fd = fd
            if self._regular:
                self._repair_tail()
        return self._fd

    def _still_at_path(self) -> bool:
        """True if the path still names the file this has open (one stat per batch)."""
        try:
            info = os.stat(self.path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self._inode

    def _repair_tail(self) -> None:
        """Cut off a torn last line left by a process that died mid-write."""
        if self._size == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(max(0, self._size - 1))
            if f.read(1) == b"\n":
                return
            # Find the last complete line, reading backwards in blocks.
            end = self._size
            keep = 0
            while end > 0:
                start = max(0, end - 65536)
                f.seek(start)
                block = f.read(end - start)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    keep = start + nl + 1
                    break
                end = start
        os.truncate(self.path, keep)
        self._size = keep

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.backups <= 0:
            os.truncate(self.path, 0)
            return
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def append_lines(self, lines: Iterable[bytes]) -> int:
        """Append the lines (each ending in a newline) as one batch; return bytes written.

        Raises:
            OSError: the batch could not be written; the file holds none of it.
        """
        data = b"".join(lines)
        if not data:
            return 0
        with self._lock:
            fd = self._open()
            if (
                self._regular
                and self.max_bytes
                and self._size
                and self._size + len(data) > self.max_bytes
            ):
                self._rotate()
                fd = self._open()
            start = self._size
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if self.fsync and self._regular:  # a device or a pipe refuses it (EINVAL)
                    os.fsync(fd)
            except OSError:
                # Take back what did get written, so no half batch (or half line) remains.
                try:
                    if self._regular:
                        os.truncate(self.path, start)
                finally:
                    self.close()
                raise
            self._size = start + len(data)
            return len(data)

    def close(self) -> None:
        """Close the file descriptor (the next append reopens it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
