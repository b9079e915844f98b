"""Output discipline shared by every command: never overwrite without ``--force``, never leave half-written output.

Files and folders are written under a temporary name beside their destination (same file system, so
the final ``os.replace`` is atomic) and renamed into place only once complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import FileAccessError, OutputExistsError

logger = logging.getLogger(__name__)


def check_output_path(path: Path, force: bool, what: str = "output", *, file: bool = False) -> None:
    """Refuse an existing destination (unless ``force``), a missing parent folder, a folder that takes no new files and,
    for a ``file`` output, a folder in its place, before any work; remove what an interrupted earlier write to the
    same destination left behind.  A command that writes several outputs checks them all first, so a failure never
    leaves the first written and the others not."""
    path = Path(path)
    remove_stale_leftovers(path)
    if file and path.is_dir():
        raise FileAccessError(f"{what} would replace a folder of that name", path)
    if path.exists() and not force:
        raise OutputExistsError(f"{what} exists; pass --force to overwrite it", path)
    check_writable_folder(path.parent, what)


def check_writable_folder(folder: Path, what: str = "output") -> None:
    """The folder exists and takes new files (outputs are written beside their destination, then renamed)."""
    if not folder.is_dir():
        raise FileAccessError("the folder for the output does not exist", folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FileAccessError(f"cannot write the {what} here (permission denied)", folder)


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-\d+(?:-.*)?$")


def destination_of(path: str | Path) -> Path:
    """The destination a temporary name of ours (``.NAME.tmp-PID…``) stands for, so errors name the user's path."""
    path = Path(path)
    match = _TEMPORARY.match(path.name)
    return path.with_name(match.group("name")) if match else path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_leftovers(path: Path) -> list[Path]:
    """Delete ``.NAME.tmp-PID*`` / ``.NAME.old-PID*`` beside ``path`` whose writing process is gone (killed mid-write);
    a write still in progress (its process alive) is left alone.  Each removal is named in a warning."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:tmp|old)-(\d+)(?:\D.*)?$")
    removed = []
    if path.parent.is_dir():
        for item in sorted(path.parent.iterdir()):
            match = pattern.match(item.name)
            if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
                _remove(item)
                removed.append(item)
                logger.warning("removed %s, left by an interrupted earlier write of %s", item, path)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_folder(out_dir: Path, *, force: bool, what: str = "output folder") -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``out_dir``, on any error it is removed.

    An existing ``out_dir`` (allowed only with ``force``) is moved aside first and deleted only after
    the new folder is in place, so an interruption never loses both.
    """
    out_dir = Path(out_dir)
    check_output_path(out_dir, force, what)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    try:
        yield tmp
        _usual_permissions(tmp)
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                _remove(leftover)


@contextlib.contextmanager
def atomic_file_path(path: Path, *, force: bool, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write; on success it replaces ``path``, on any error it
    is removed (so a reader never sees half a file)."""
    path = Path(path)
    check_output_path(path, force, what)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        _usual_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _usual_permissions(path: Path) -> None:
    """What a plainly created file or folder gets under the user's umask (``mkdtemp`` makes 0700 and some writers,
    safetensors among them, 0600), so an output is as readable as anything else the user writes: by an inference
    server or a colleague when the umask allows it."""
    mask = os.umask(0)
    os.umask(mask)
    if path.is_dir():
        for folder, _dirs, files in os.walk(path):
            os.chmod(folder, 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o666 & ~mask)
    elif path.exists():
        os.chmod(path, 0o666 & ~mask)


def write_text_atomic(path: Path, text: str, *, force: bool, what: str = "output") -> None:
    """Write a text file under a temporary name, then rename it into place."""
    with atomic_file_path(path, force=force, what=what) as tmp:
        tmp.write_text(text)
