"""What a command may replace, and one writer per run directory.

A run directory carries a marker file (``.conceptkit-run``) that only conceptkit writes; a staged directory carries
``.conceptkit-staging``. ``check_output_dir`` refuses, before any work, every ``--out`` that is not an empty
directory or a directory with the run marker, and every ``--out`` that holds the command's own inputs or the
current directory. ``RunLock`` lets one command at a time write a run (an exclusive ``flock`` on a hidden lock file
beside it); the holder then removes what dead commands left beside the run (staged or replaced copies, each
carrying one of the markers). Nothing here deletes a file or directory without a marker.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

RUN_MARKER = ".conceptkit-run"
STAGING_MARKER = ".conceptkit-staging"


class OutputRefused(ValueError):
    """The output directory is not one this command may write (a user error: exit 2, nothing done)."""


class RunBusy(OutputRefused):
    """Another conceptkit command holds the run directory's lock."""


def is_run_dir(path: Path) -> bool:
    """True when ``path`` is a directory conceptkit wrote as a run: it holds the run marker, or (runs built before
    the marker existed) a manifest.json that conceptkit wrote (a run id and conceptkit's version in it)."""
    marker = path / RUN_MARKER
    try:
        if marker.is_file() and not marker.is_symlink():
            return json.loads(marker.read_text(encoding="utf-8")).get("conceptkit") == "run"
        manifest = path / "manifest.json"
        if manifest.is_file() and not manifest.is_symlink() and manifest.stat().st_size < (64 << 20):
            data = json.loads(manifest.read_text(encoding="utf-8"))
            return bool(data.get("run_id")) and "conceptkit" in (data.get("versions") or {})
    except (OSError, ValueError, AttributeError):
        return False
    return False


def write_run_marker(run_dir: Path, run_id: str) -> None:
    (run_dir / RUN_MARKER).write_text(json.dumps({"conceptkit": "run", "run_id": run_id}) + "\n", encoding="utf-8")


def write_staging_marker(staged: Path) -> None:
    (staged / STAGING_MARKER).write_text(json.dumps({"conceptkit": "staging", "pid": os.getpid()}) + "\n",
                                         encoding="utf-8")


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def check_output_dir(out: Path, *, inputs: Iterable[str | os.PathLike[str] | None] = (), flag: str = "--out") -> None:
    """Raise ``OutputRefused`` (one line, naming the path) unless ``out`` may be (re)written as a run directory."""
    resolved = Path(os.path.abspath(out))
    cwd = Path.cwd().resolve()
    if resolved == Path(resolved.anchor) or _inside(cwd, resolved.resolve()):
        raise OutputRefused(f"{flag} {out}: is the current directory or one above it; give a directory of its own, "
                            "e.g. runs/NAME")
    for item in inputs:
        if item and _inside(Path(os.path.abspath(item)).resolve(), resolved.resolve()):
            raise OutputRefused(f"{flag} {out}: holds this command's input {item}; a rebuild would replace it. "
                                "Give another output directory")
    if out.is_symlink():
        raise OutputRefused(f"{flag} {out}: is a symbolic link; give the directory itself")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputRefused(f"{flag} {out}: is a file, not a run directory; nothing was written")
    if is_run_dir(out):
        return
    try:
        empty = next(out.iterdir(), None) is None
    except OSError as exc:
        raise OutputRefused(f"{flag} {out}: cannot be read ({exc.strerror})") from None
    if not empty:
        raise OutputRefused(f"{flag} {out}: exists and is not a conceptkit run (no {RUN_MARKER} marker); nothing "
                            "was written. Choose a new directory, or move its contents away yourself")


class RunLock:
    """An exclusive, non-blocking lock on ``<parent>/.<name>.lock`` for writing the run ``out``.

    The lock dies with its process (``kill -9`` included), so a stale lock file never blocks anyone; a clean exit
    removes the file. On entry it
    removes leftovers of dead commands beside ``out``: ``.<name>.tmp-*`` / ``.<name>.old-*`` directories that
    carry a conceptkit marker (no live command can own them while the lock is held).
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out.parent / f".{self.out.name}.lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise RunBusy(f"{self.out}: another conceptkit command is writing this run "
                                  f"({holder or 'unknown'}); wait for it to finish, or choose another --out") from None
                raise
            # The holder before us removes the file when done: a lock on a removed file locks nothing, try again.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {datetime.now(timezone.utc).isoformat(timespec='seconds')}".encode(), 0)
        self._fd = fd
        self.removed = remove_leftovers(self.out)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding it: a waiter then re-checks the inode
            os.close(self._fd)
            self._fd = None


def remove_leftovers(out: Path) -> list[Path]:
    """Remove ``.<name>.tmp-*`` / ``.<name>.old-*`` beside ``out`` that carry a conceptkit marker; call it only
    while holding ``RunLock(out)``. Returns what was removed."""
    removed = []
    if not out.exists():
        # Killed between moving the old run aside and moving the new one in: the old run comes back first.
        olds = sorted((p for p in out.parent.glob(f".{out.name}.old-*") if is_run_dir(p)),
                      key=lambda p: p.stat().st_mtime)
        if olds:
            os.replace(olds[-1], out)
    for pattern in (f".{out.name}.tmp-*", f".{out.name}.old-*"):
        for path in out.parent.glob(pattern):
            if path.is_dir() and not path.is_symlink() and (
                    (path / STAGING_MARKER).is_file() or is_run_dir(path)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed
