"""Atomic file writes, stale temp-file cleanup and timestamps (a leaf module: the standard
library only).

An atomic write goes to a temp sibling ``.<name>.<pid>@<host>.<random>.tmp``, is flushed to
disk, then renamed over the target with :func:`os.replace` (atomic on POSIX and Windows), so
at every instant the target is the old file or the new one. A write killed half-way leaves
only its temp file; :func:`clean_stale_temps` removes those (writer gone, or older than
:data:`STALE_AFTER_S`) on the next write into the folder.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import socket
import tempfile
import time
import zlib
from pathlib import Path

__all__ = [
    "STALE_AFTER_S",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_stale_temps",
    "link_or_copy",
    "now_iso",
]

#: A temp file older than this (seconds since its last write) is stale whoever wrote it.
STALE_AFTER_S = 60.0

# .<target>.<pid>@<host>.<random>.tmp (this module) and .<target>.<random8>.tmp (older nbseg)
_TEMP = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)@(?P<host>[0-9a-f]{6})\.[A-Za-z0-9_]+\.tmp$")
_OLD_TEMP = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode('utf-8', 'replace')) & 0xFFFFFF:06x}"


_HOST = _host_tag()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie counts as gone). Where that
    cannot be told (Windows: ``os.kill`` would terminate it), True."""
    if os.name == "nt" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:  # Linux: 'Z' = exited, not yet reaped
            state = fh.read().rsplit(b")", 1)[-1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def clean_stale_temps(
    folder: str | os.PathLike[str], suffix: str | None = None, max_age_s: float = STALE_AFTER_S
) -> list[Path]:
    """Remove the temp files that killed atomic writes left in ``folder`` (only those whose
    target name ends with ``suffix``, when given): a temp file is stale when the process
    that wrote it (on this host) is gone, or when it was last written more than
    ``max_age_s`` seconds ago. Returns the removed paths; never raises."""
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.endswith(".tmp") or not name.startswith("."):
            continue
        m = _TEMP.match(name) or _OLD_TEMP.match(name)
        if m is None or (suffix and not m.group("target").endswith(suffix)):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        gone = (
            m.re is _TEMP
            and m.group("host") == _HOST
            and int(m.group("pid")) != os.getpid()
            and not _alive(int(m.group("pid")))
        )
        if gone or age > max_age_s:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_sibling(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=".tmp", dir=path.parent
    )


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp sibling, flushed to disk, then renamed over
    the target): at every instant ``path`` is the old file or the new one, and a crash leaves
    the old file or the new one. Stale temp files of earlier killed writes of files with the
    same suffix in that folder are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, path.suffix or path.name)
    fd, tmp = _temp_sibling(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """A second name ``dst`` for the file ``src``, which stays where it is: a hard link, or
    where the file system has none an atomic copy. Raises :class:`FileExistsError` when
    ``dst`` exists (it is never replaced)."""
    src, dst = Path(src), Path(dst)
    try:
        os.link(src, dst)
        return dst
    except FileExistsError:
        raise
    except OSError:
        pass  # no hard links here (FAT, some network shares): copy
    if dst.exists():
        raise FileExistsError(f"{str(dst)!r} exists")
    fd, tmp = _temp_sibling(dst)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)  # dst names are unique (trash time stamps)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (model timestamps)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
