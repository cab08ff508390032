"""Write files and directories so that a reader never sees half of one, and two writers never collide.

A file goes to a temporary name in the same directory and is renamed over the target; a directory is
filled under a temporary name and renamed into place. An error leaves the old content untouched.

A directory is written under an exclusive lock on `.NAME.lock` next to it, so a second writer to the
same path fails at once instead of silently replacing the first. Everything written gets ordinary
permissions (0o777/0o666 less the umask), so a bundle is readable by a service account.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from geofractal_edge.errors import GfedgeError, OutputLockedError


def _umask() -> int:
    """The process umask, read without changing it where Linux allows.

    os.umask(0)-then-restore briefly gives every other thread a zero umask; /proc/self/status does not.
    """
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as status:
            return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    return 0o666 & ~_umask()


def _dir_mode() -> int:
    return 0o777 & ~_umask()


def write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())  # mkstemp makes 0600; the file must read like any other
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def lock_path(final: Path) -> Path:
    """The lock file that guards writes to `final`."""
    final = Path(final)
    return final.with_name(f".{final.name}.lock")


def _holder(fd: int) -> str:
    """The pid recorded in a lock file by its holder ("unknown" if it has not written it yet)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"


def _try_lock(path: Path, final: Path) -> int | None:
    """An fd holding the lock on the file now at `path`; None if we locked a file already unlinked."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _file_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder(fd)
        os.close(fd)
        raise OutputLockedError(final, path, pid) from None
    with contextlib.suppress(FileNotFoundError):
        here, held = os.stat(path), os.fstat(fd)
        if (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino):
            return fd
    os.close(fd)  # the previous holder unlinked it between our open and our flock
    return None


@contextlib.contextmanager
def locked(final: Path) -> Iterator[Path]:
    """Hold the exclusive lock on writes to `final`; raise OutputLockedError at once if another holds it.

    The lock file is removed on release, which is race-free because (1) only the holder unlinks it,
    while still holding the lock, and (2) a taker checks, after flock succeeds, that the file it locked
    is still the one at the path, and starts over if not. So two processes can never both believe they
    hold it, even when one locks an inode that the previous holder has just unlinked.
    """
    path = lock_path(final)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = None
    while fd is None:
        fd = _try_lock(path, Path(final))
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)  # named in the second writer's error
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # before close: while we hold it, no one else can have replaced it
        os.close(fd)


def _leftover_pattern(name: str) -> re.Pattern[str]:
    """Staging (`.NAME.TOKEN.partial`) and swapped-out (`.NAME.old-PID`) folders of a killed writer.

    TOKEN has no dots, so `.a.b.x.partial` (a writer of `a.b`) never matches for `a`.
    """
    stem = re.escape(f".{name}.")
    return re.compile(rf"{stem}(?:[^.]+\.partial|old-\d+)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _remove_leftovers(final: Path) -> None:
    """Remove what killed writers of `final` left; only called under the lock, so none is live."""
    pattern = _leftover_pattern(final.name)
    for entry in final.parent.iterdir():
        if pattern.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _normalize_modes(root: Path) -> None:
    """Give `root` and everything in it ordinary permissions (mkdtemp makes 0700, mkstemp 0600)."""
    dir_mode, file_mode = _dir_mode(), _file_mode()
    os.chmod(root, dir_mode)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):  # chmod would follow it out of the bundle
                os.chmod(path, dir_mode if name in dirs else file_mode)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux renameat2(RENAME_EXCHANGE); False where that is unavailable."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # kernel or filesystem without it
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _replace(tmp: Path, final: Path) -> None:
    """Put `tmp` at `final`, replacing what is there; the old content is gone only once the new is in place."""
    if _exchange(tmp, final):
        _remove(tmp)  # now holds the old content; if we die here, the next writer removes it
        return
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)
        raise
    _remove(old)


def check_free(final: Path, *, overwrite: bool) -> None:
    """Refuse to replace an existing `final` unless asked; call it under the lock, so racing writers cannot both pass."""
    if Path(final).exists() and not overwrite:
        raise GfedgeError(f"{final} already exists", "choose another --out, or pass --overwrite")


@contextlib.contextmanager
def directory(final: Path, *, overwrite: bool = False, lock: bool = True) -> Iterator[Path]:
    """Yield a temporary directory next to `final`; on success rename it to `final`.

    The whole context holds the lock on `final` (OutputLockedError if another writer holds it);
    `lock=False` is for a caller that already holds it through `locked(final)` for longer work.
    With `overwrite`, an existing `final` is replaced only after the new one is complete.
    """
    final = Path(final)
    with locked(final) if lock else contextlib.nullcontext():
        check_free(final, overwrite=overwrite)
        _remove_leftovers(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
        try:
            yield tmp
            _normalize_modes(tmp)
            if final.exists() or final.is_symlink():
                _replace(tmp, final)
            else:
                os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
