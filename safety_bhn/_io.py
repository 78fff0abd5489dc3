"""Safe file writes (atomic replacement, a per-folder lock), safe loads and data fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class FolderInUseError(RuntimeError):
    """Another process holds a run folder's lock."""


@contextmanager
def folder_lock(folder: str | os.PathLike | None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.lock`` while the block runs (no-op for ``None``).

    A second process (or a second open of the same folder) that tries to take it gets a
    RuntimeError at once, instead of two writers taking turns on one state file. The lock
    is ``flock``-based and goes away with the process that held it, even after a crash; where
    ``fcntl`` is missing (Windows) nothing is locked.
    """
    if folder is None or fcntl is None:
        yield
        return
    path = Path(folder) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUseError(
                f"{folder} is in use by another run (lock {path} is held); wait for that "
                "process to finish or choose another folder"
            ) from None
        for stale in Path(folder).glob(".*.tmp"):  # left by a writer killed mid-write: with
            if OWN_TEMP.fullmatch(stale.name):  # the lock held, no other process writes them
                stale.unlink(missing_ok=True)  # (a user's own hidden .tmp files stay)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


#: The temp names this package writes: ``.NAME.<hex digits>.tmp`` (create_temp_beside) and
#: ``.NAME.new.tmp`` (a run's files, written in full before they replace the old ones).
OWN_TEMP = re.compile(r"\..+\.([0-9a-f]{6,}|new)\.tmp")


def create_temp_beside(path: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create a new hidden temp file beside ``path``, open for writing.

    It is created with mode 0o666 so that the kernel applies the umask, as a plain
    ``open(path, "w")`` would (``mkstemp`` makes private 0o600 files; reading the umask with
    ``os.umask`` would briefly change it for every thread).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temp file beside {path}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temp file, then move it over ``path``; a crash leaves the old file.

    A new file gets the permissions ``open()`` would give it; a rewritten one keeps its own.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def fsync_folder(folder: Path) -> None:
    """Make a rename into ``folder`` survive a power cut (POSIX); a no-op where folders
    cannot be opened (Windows)."""
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


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write a checkpoint dict (tensors and plain values) with ``torch.save``, atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(state, f))


def load_state(path: str | os.PathLike, key: str, fix: str) -> dict[str, Any]:
    """A checkpoint written by :func:`save_state`, read with ``weights_only=True``; a file
    that cannot be read or lacks ``key`` raises one ValueError naming it and ``fix``."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if key not in state:  # not one of our checkpoints, or cut short
            raise KeyError(key)
    except Exception as err:  # torch's own message may suggest an unsafe load: not quoted
        raise ValueError(f"{path} is a damaged checkpoint ({type(err).__name__}); {fix}") from None
    return state


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``; a damaged file raises ValueError naming it (not just the line)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path} is damaged (not valid JSON: {err}); restore it or delete the run"
        ) from None


def fingerprint(*tensors: Tensor) -> str:
    """A SHA-1 of the tensors' dtypes, shapes and bytes: saved state records which data it
    was made from, so a resume on other data of the same size is refused."""
    import torch

    digest = hashlib.sha1()
    for t in tensors:
        digest.update(str((t.dtype, tuple(t.shape))).encode())
        # the raw bytes, which every dtype has (bfloat16 has no NumPy type)
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
