"""Output files: the "exists, use --overwrite" check, hidden temporaries, atomic writes.

Every command that writes a file goes through here: outputs are refused when they
exist (unless ``overwrite``), built in hidden temporary files beside the final path
(``.<name>.<kind>-<random>``, which batch mode cleans up after a crash) and renamed
into place only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from alosmap.errors import OutputExistsError, OutputPathError


def check_overwrite(paths: Iterable[str | os.PathLike[str]], overwrite: bool) -> None:
    """Refuse to replace existing outputs unless ``overwrite``.

    Raises:
        OutputExistsError: naming every output that exists.
    """
    if overwrite:
        return
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing:
        names = ", ".join(existing[:3])
        if len(existing) > 3:
            names += f" and {len(existing) - 3} more"
        verb = "exists" if len(existing) == 1 else "exist"
        raise OutputExistsError(
            f"{names} {verb}; pass --overwrite (overwrite=True) to replace, or "
            "choose another path"
        )


def temp_path(final: str | os.PathLike[str], kind: str = "tmp") -> Path:
    """A hidden, unique temporary path beside ``final``: ``.<name>.<kind>-<hex>``."""
    out = Path(final)
    return out.with_name(f".{out.name}.{kind}-{secrets.token_hex(4)}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable(path: str | os.PathLike[str]) -> None:
    """Give a ``mkstemp`` file (mode 0600) the usual mode for new files (umask)."""
    os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a hidden temporary file beside ``path``, renamed onto it on success.

    The file exists (empty) when yielded; a writer that must create it itself (GDAL)
    may delete it first. On any error (or Ctrl-C) the temporary file is removed and
    ``path`` is untouched. The result gets the usual mode for new files.

    Args:
        path: the final file.
        suffix: ending of the temporary name (a driver may need ``.gpkg``, ``.tif``).
    """
    out = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        make_readable(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Let ``write`` fill a temporary file beside ``path``, then rename it over it.

    On any error (or Ctrl-C) the temporary file is removed and ``path`` is untouched.
    """
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_dir(out_dir: Path, overwrite: bool, marker: str) -> Iterator[Path]:
    """Yield a hidden temporary sibling directory, renamed onto ``out_dir`` on success.

    An existing ``out_dir`` is replaced only with ``overwrite``, and only when it is
    empty or holds ``marker`` (a file that says it is one of ours, e.g.
    ``dataset.json``). On any error the temporary directory is removed and
    ``out_dir`` is untouched.

    Raises:
        OutputExistsError: ``out_dir`` exists (without ``overwrite``), is not a
            directory, or is a non-empty directory without ``marker``.
        OutputPathError: the parent directory does not exist.
    """
    if out_dir.exists() or out_dir.is_symlink():
        check_overwrite([out_dir], overwrite)
        if not out_dir.is_dir():
            raise OutputExistsError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / marker).is_file():
            raise OutputExistsError(
                f"{out_dir} is not an alosmap output (no {marker}); refusing "
                "to replace it even with --overwrite"
            )
    parent = out_dir.parent
    if not parent.is_dir():
        raise OutputPathError(f"{parent}: output parent directory does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=parent))
            os.replace(out_dir, old / "d")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
