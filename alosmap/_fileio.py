"""Output files: the "exists, use --overwrite" check, hidden temporaries, atomic writes.

Every command that writes a file goes through here: an output that is one of the
command's inputs is refused whatever ``overwrite`` says, outputs are refused when they
exist (unless ``overwrite``), built in hidden temporary files beside the final path
(``.<name>.<kind>-<pid>-<random>``) and renamed into place only when complete. The
process id in the name tells a later run which leftovers of a killed run it may remove
(:func:`remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
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


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same file (through links too); False if absent."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_not_input(
    outputs: Iterable[str | os.PathLike[str]],
    inputs: Iterable[str | os.PathLike[str]],
) -> None:
    """Refuse any output that is one of the inputs (same file, link or path).

    Raises:
        OutputPathError: naming the output; ``--overwrite`` does not change this.
    """
    ins = [Path(i) for i in inputs]
    for out in outputs:
        for src in ins:
            if same_file(out, src):
                raise OutputPathError(
                    f"output {out} is the input {src}; refusing to write over an "
                    "input (whatever --overwrite says): choose another output path"
                )


def check_not_input_dir(
    out_dir: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]
) -> None:
    """Refuse an output directory that is, or holds, one of the inputs.

    Replacing an output directory (:func:`atomic_dir`) removes everything in it,
    so an input file or directory inside it (through links too) would be lost;
    this holds whatever ``--overwrite`` says.

    Raises:
        OutputPathError: naming the output and the input.
    """
    out = Path(out_dir).resolve()
    for src in inputs:
        real = Path(src).resolve()
        if real == out or out in real.parents:
            raise OutputPathError(
                f"--output {out_dir} is or holds the input {src}; refusing to "
                "replace an input (whatever --overwrite says): choose another "
                "output directory"
            )


def check_output_place(path: str | os.PathLike[str]) -> None:
    """Check, before any work, that a file can be created at ``path``.

    Its directory must exist (it is not created) and be writable.

    Raises:
        OutputPathError: the directory is missing, not a directory or not writable.
    """
    parent = Path(path).parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise OutputPathError(f"output directory {parent} {what}; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"output directory {parent} is not writable; choose another output"
        )


def temp_prefix(final: str | os.PathLike[str], kind: str = "tmp") -> str:
    """Prefix of this process's temporaries for ``final``: ``.<name>.<kind>-<pid>-``."""
    return f".{Path(final).name}.{kind}-{os.getpid()}-"


def temp_path(final: str | os.PathLike[str], kind: str = "tmp") -> Path:
    """A hidden temporary path beside ``final``, unique to this call.

    Named ``.<name>.<kind>-<pid>-<random hex>`` (see :func:`remove_stale_temps`).
    """
    out = Path(final)
    return out.with_name(temp_prefix(out, kind) + secrets.token_hex(4))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(*finals: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries interrupted runs left beside the outputs ``finals``.

    Only files named by :func:`temp_path` / :func:`atomic_path` for one of
    ``finals`` (``.<name>.<kind>-<pid>-…``, GDAL's ``.ovr.tmp`` companions
    included) whose process is no longer running are removed; a directory of that
    name (a temporary output directory) is removed with its contents. Each
    directory is listed once, however many outputs it holds (a national batch
    directory holds many thousand files).

    Returns:
        The files and directories removed.
    """
    by_dir: dict[Path, set[str]] = {}
    for final in finals:
        out = Path(final)
        by_dir.setdefault(out.parent, set()).add(out.name)
    removed: list[Path] = []
    for directory, names in by_dir.items():
        if not directory.is_dir():
            continue
        alternatives = "|".join(re.escape(n) for n in sorted(names))
        pattern = re.compile(rf"^\.(?:{alternatives})\.[a-z]+-(\d+)-")
        with os.scandir(directory) as entries:
            stale = [
                Path(e.path)
                for e in entries
                if e.name.startswith(".")
                and (m := pattern.match(e.name))
                and not _pid_alive(int(m.group(1)))
            ]
        removed += [p for p in stale if _remove(p)]
    return removed


def _remove(path: Path) -> bool:
    """Delete a file or a directory tree; whether it is gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()
    return not path.exists() and not path.is_symlink()


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it wraps) says the disk or quota is full."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


#: Free space (bytes) below which a failed write is taken for a full disk.
LOW_SPACE = 1 << 20


def write_failed_for_space(
    exc: BaseException | None, directory: str | os.PathLike[str], low: int = LOW_SPACE
) -> bool:
    """Whether a failed write into ``directory`` was for want of space.

    GDAL reports a full disk as a generic write error (inside libtiff sometimes not
    at all), so besides :func:`is_disk_full` the free space of ``directory`` is
    asked: less than ``low`` bytes counts as full.
    """
    if exc is not None and is_disk_full(exc):
        return True
    try:
        return shutil.disk_usage(directory).free < low
    except OSError:
        return False


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
    fd, name = tempfile.mkstemp(prefix=temp_prefix(out), suffix=suffix, dir=out.parent)
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
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir), dir=parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir, "old"), dir=parent))
            os.replace(out_dir, old / "d")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
