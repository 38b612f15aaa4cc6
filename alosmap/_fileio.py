"""Output files: the "exists, use --overwrite" check, hidden temporaries, atomic writes.

Every command that writes a file goes through here: an output that is one of the
command's inputs is refused whatever ``overwrite`` says, outputs are refused when they
exist (unless ``overwrite``), built in hidden temporary files beside the final path
(``.<name>.<kind>-<pid>-<random>``) and renamed into place only when complete. The
process id in the name tells a later run which leftovers of a killed run it may remove
(:func:`remove_stale_temps`). Without ``overwrite`` the final rename never replaces a
file that appeared meanwhile (another run writing the same output):
:func:`rename_no_replace` fails instead, and nothing of this run stays.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import cast

from alosmap.errors import DiskFullError, OutputExistsError, OutputPathError


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
            f"{names} {verb}; pass --overwrite to replace, or choose another path"
        )


def appeared_meanwhile(path: str | os.PathLike[str]) -> OutputExistsError:
    """The error for an output that appeared while this run was writing it."""
    return OutputExistsError(
        f"{path} appeared meanwhile (another run writing the same output?); left "
        "it as it is and kept nothing of this run: choose another path, or pass "
        "--overwrite to replace it"
    )


#: ``renameat2`` flag: fail with EEXIST instead of replacing the target (Linux).
_RENAME_NOREPLACE = 1
#: ``AT_FDCWD``: paths relative to the working directory (Linux).
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """The C library's ``renameat2`` (Linux, glibc 2.28 or later), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    func.restype = ctypes.c_int
    return cast("Callable[..., int]", func)


def rename_no_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists, atomically.

    ``renameat2(RENAME_NOREPLACE)`` where the system and file system have it; else,
    for a file, a hard link ``dst`` (which fails if ``dst`` exists) and the removal
    of ``src``; else (a directory, a file system without hard links) a rename after
    a check, which only a run starting in between can defeat.

    Raises:
        FileExistsError: ``dst`` exists (``src`` is left as it is).
        OSError: the rename failed otherwise.
    """
    src_b, dst_b = os.fsencode(src), os.fsencode(dst)
    func = _renameat2()
    if func is not None:
        if func(_AT_FDCWD, src_b, _AT_FDCWD, dst_b, _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), os.fsdecode(dst))
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
            raise OSError(err, os.strerror(err), os.fsdecode(src))
        # the file system has no RENAME_NOREPLACE: below
    if not os.path.isdir(src_b):
        try:
            os.link(src_b, dst_b, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:
            pass  # no hard links here (EPERM, ENOTSUP, EXDEV…): below
        else:
            os.unlink(src_b)
            return
    if os.path.lexists(dst_b):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(dst))
    os.rename(src_b, dst_b)


def move_into_place(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, replace: bool
) -> None:
    """Rename a finished temporary onto its final path.

    Args:
        src: the temporary.
        dst: the final path.
        replace: replace ``dst`` if it exists (``--overwrite``); else a ``dst``
            that appeared since the outputs were checked is left as it is.

    Raises:
        OutputExistsError: ``dst`` exists and not ``replace`` (``src`` is kept).
    """
    if replace:
        os.replace(src, dst)
        return
    try:
        rename_no_replace(src, dst)
    except FileExistsError as exc:
        raise appeared_meanwhile(dst) from exc


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


def format_size(n: int) -> str:
    """Bytes as people read them: ``512 B``, ``1.5 KiB``, ``230.4 MiB``, ``1.2 GiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def disk_full_error(
    output: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    needed: int | None = None,
) -> DiskFullError:
    """The one-line error for a full disk while writing ``output`` into ``directory``.

    It names the directory, its free space and, when known, the space ``needed``.
    """
    try:
        free: int | None = shutil.disk_usage(directory).free
    except OSError:
        free = None
    room = format_size(free) if free is not None else "too little space"
    need = (
        f", the outputs need up to {format_size(needed)} before compression"
        if needed
        else ""
    )
    return DiskFullError(
        f"disk full while writing {output}: {room} free in {directory}{need}; free "
        "some space or choose another output directory (nothing was written)",
        directory=str(directory),
        free=free,
        needed=needed,
    )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable(path: str | os.PathLike[str]) -> None:
    """Give a ``mkstemp`` file (mode 0600) the usual mode for new files (umask)."""
    os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], suffix: str = ".tmp", *, replace: bool = True
) -> Iterator[Path]:
    """Yield a hidden temporary file beside ``path``, renamed onto it on success.

    The file exists (empty) when yielded; a writer that must create it itself (GDAL)
    may delete it first. On any error (or Ctrl-C) the temporary file is removed and
    ``path`` is untouched. The result gets the usual mode for new files.

    Args:
        path: the final file.
        suffix: ending of the temporary name (a driver may need ``.gpkg``, ``.tif``).
        replace: replace an existing ``path`` (``--overwrite``); else a ``path``
            that appeared meanwhile (another run) is left as it is.

    Raises:
        OutputExistsError: ``path`` appeared meanwhile and not ``replace``
            (nothing is left behind).
    """
    out = Path(path)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(out), suffix=suffix, dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        make_readable(tmp)
        move_into_place(tmp, out, replace=replace)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[Path], object],
    *,
    replace: bool = True,
) -> Path:
    """Let ``write`` fill a temporary file beside ``path``, then rename it over it.

    On any error (or Ctrl-C) the temporary file is removed and ``path`` is untouched.
    Without ``replace``, a ``path`` that appeared meanwhile is kept and
    :class:`OutputExistsError` raised.
    """
    with atomic_path(path, replace=replace) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, replace: bool = True
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda p: p.write_bytes(data), replace=replace)


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
    ``out_dir`` is untouched; an ``out_dir`` that appeared meanwhile (another run)
    is never replaced.

    Raises:
        OutputExistsError: ``out_dir`` exists (without ``overwrite``), is not a
            directory, or is a non-empty directory without ``marker``; or it
            appeared while the temporary directory was being filled.
        OutputPathError: the parent directory does not exist.
    """
    existed = out_dir.exists() or out_dir.is_symlink()
    if existed:
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
        if existed and out_dir.exists():  # checked above: ours to replace
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir, "old"), dir=parent))
            os.replace(out_dir, old / "d")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:  # absent when checked: whatever appeared meanwhile is not ours
            move_into_place(tmp, out_dir, replace=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
