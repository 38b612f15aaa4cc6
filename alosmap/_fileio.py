"""Small file helpers: atomic writes with the usual permissions."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def make_readable(path: str | os.PathLike[str]) -> None:
    """Give a ``mkstemp`` file (mode 0600) the usual mode for new files (umask)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename over it."""
    out = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        make_readable(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
