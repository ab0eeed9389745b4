"""Output paths: a file or a folder, never overwriting unless asked, written atomically."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import SpectrodiffError

DEFAULT_OUTPUT_DIR = Path("outputs")
# The longest file name, in bytes, that Linux's file systems take.
NAME_MAX = 255


def resolve_output(out: Path | None, default_name: str, suffixes: tuple[str, ...]) -> Path:
    """Where to write: `out` itself when it names a file with one of `suffixes`, else `default_name` inside the
    folder `out` (default outputs/). Nothing is created until the file is written (see `atomic_path`)."""
    if out is not None and out.suffix.lower() in suffixes and not out.is_dir():
        return out
    if out is not None and out.suffix and not out.is_dir():
        raise SpectrodiffError(f"cannot write {out}: expected a folder or a file ending in {', '.join(suffixes)}")
    folder = out if out is not None else DEFAULT_OUTPUT_DIR
    if folder.exists() and not folder.is_dir():
        raise SpectrodiffError(f"{folder} exists and is not a folder")
    return folder / default_name


def check_writable(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise SpectrodiffError(f"{path} already exists (pass --overwrite to replace it)")


@contextlib.contextmanager
def atomic_path(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` (its folder created); on success it is renamed to `path`, on failure
    removed."""
    path = Path(path)
    check_writable(path, overwrite)
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise SpectrodiffError(f"cannot write {path}: {os_reason(exc, {str(tmp): path})}") from None
    finally:
        with contextlib.suppress(OSError):  # e.g. the folder is a file: there is nothing to remove
            tmp.unlink(missing_ok=True)


def temporary_path(path: Path) -> Path:
    """The hidden name a file is written under before it is renamed to `path` (same folder, same suffix), within
    NAME_MAX bytes however long `path`'s name is (its stem is cut)."""
    tail = f".{os.getpid()}.tmp{path.suffix}"
    stem = path.stem.encode()[: max(NAME_MAX - 1 - len(tail.encode()), 0)].decode(errors="ignore")
    return path.with_name(f".{stem}{tail}")


def os_reason(exc: OSError, names: dict[str, Path] | None = None) -> str:
    """An operating-system error in words, naming the user's path (a temporary name is replaced by `names`'s)."""
    name = exc.filename if exc.filename is not None else ""
    name = str((names or {}).get(str(name), name))
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and Path(name).exists() and not Path(name).is_dir():
        return f"{name} is {'a file' if Path(name).is_file() else 'a device or other special file'}, not a folder"
    reason = exc.strerror or str(exc)
    return f"{reason} ({name})" if name else reason
