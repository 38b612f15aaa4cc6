"""Process-wide settings of the command-line tool: GDAL's block cache, libtiff, SIGTERM.

GDAL's block cache (default 5 % of RAM) is capped: strip-wise reading and writing
needs little, and a small cache keeps the peak memory nearly flat across scene
sizes. The commands that map scenes (``predict``, ``water``, ``batch``, and
``bench``'s runs of them) get :data:`MAPPING_CACHE_MB`: they decode each block of a
scene once (:class:`~alosmap.predict.tiles.RowBuffer`) and hand GDAL whole rows of
blocks to write (:class:`~alosmap.io.writer.MapWriter`), so a larger cache only
holds blocks that are never read again (measured: 55 MB less peak at 12000², the
same speed). The other commands keep :data:`GDAL_CACHE_MB` (measured: 215 MB less
peak at 12000² than 256 MB).

It is applied by the CLI and by ``alosmap bench``'s child processes, not on import:
a program using alosmap as a library keeps its own settings. A ``GDAL_CACHEMAX``
already in the environment wins.

Not set here: ``GDAL_NUM_THREADS``. With it, GDAL compresses written blocks in
worker threads and a full disk no longer raises an error (tested: a truncated
GeoTIFF and exit code 0); decoding threads are asked for per scene instead
(:func:`alosmap.io.raster.open_raster`, reading only).

libtiff's own error lines are silenced (:func:`quiet_libtiff`): GDAL reports a
failed write through its own errors, which alosmap turns into one line, but its
TIFF I/O functions also hand some to libtiff's default handler, which prints them
on stderr (``_tiffWriteProc: No space left on device.``, several per full disk).

SIGTERM stops a command as Ctrl-C does (:func:`sigterm_interrupts`): the same
clean-up runs (no hidden temporaries are left), then the tool exits with 143.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

#: GDAL block cache of the CLI (MB).
GDAL_CACHE_MB = 64
#: GDAL block cache of the commands that map scenes (MB).
MAPPING_CACHE_MB = 16
#: The commands that map scenes.
MAPPING_COMMANDS = frozenset({"predict", "water", "batch", "bench"})


def gdal_cache_mb(command: str | None = None) -> int:
    """The GDAL block cache (MB) of a command (its name, as the CLI calls it)."""
    return MAPPING_CACHE_MB if command in MAPPING_COMMANDS else GDAL_CACHE_MB


def configure_process(command: str | None = None, *, verbosity: int = 0) -> None:
    """Cap GDAL's block cache for ``command``; quiet libtiff below ``-vv``.

    See the module doc. libtiff is quietened once rasterio (which loads it) is
    imported: now if it is, else right after its import.
    """
    os.environ.setdefault("GDAL_CACHEMAX", str(gdal_cache_mb(command)))
    if verbosity < 2:
        after_import("rasterio", quiet_libtiff)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Run ``then`` once module ``name`` is imported (see :func:`after_import`)."""

    def __init__(self, name: str, then: Callable[[], object]) -> None:
        self.name, self.then = name, then

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once; and the finders below find the module
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module, then = loader.exec_module, self.then

        def exec_then(module: ModuleType) -> None:
            exec_module(module)
            with contextlib.suppress(Exception):  # best effort: the import stands
                then()

        loader.exec_module = exec_then  # type: ignore[method-assign]
        return spec


def after_import(name: str, then: Callable[[], object]) -> None:
    """Call ``then()`` now if module ``name`` is imported, else right after its import.

    After an import, an error of ``then`` is ignored (the import stands).
    """
    if name in sys.modules:
        then()
    else:
        sys.meta_path.insert(0, _AfterImport(name, then))


def loaded_libraries(name: str) -> list[str]:
    """Files of the shared library ``name`` (``libtiff``, ``libgdal``) loaded here.

    Read from ``/proc/self/maps`` (Linux). Elsewhere, the ones rasterio's wheel
    carries (``rasterio/.dylibs`` on macOS, loaded with rasterio) or, for
    ``libtiff``, the system's.
    """
    pattern = re.compile(rf"^{re.escape(name)}[-.].*(\.so|\.dylib)")
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {
                line.split(maxsplit=5)[-1].strip()
                for line in maps
                if name in line and line.count(" ") >= 5
            }
    except OSError:
        pass  # not Linux
    else:
        return sorted(f for f in paths if pattern.match(Path(f).name))
    spec = importlib.util.find_spec("rasterio")
    for where in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(
            str(f)
            for f in (Path(where) / ".dylibs").glob(f"{name}*")
            if pattern.match(f.name)
        )
        if found:
            return found
    system = ctypes.util.find_library(name.removeprefix("lib"))
    return [system] if system and name == "libtiff" else []


def library_functions(name: str, *functions: str) -> Iterator[tuple[Any, ...]]:
    """The C ``functions`` of each loaded library ``name`` that has them all.

    Libraries as :func:`loaded_libraries` finds them; one that cannot be opened or
    lacks a function is passed over. The functions come untyped: set their
    ``argtypes`` and ``restype`` before calling them.
    """
    for path in loaded_libraries(name):
        try:
            lib = ctypes.CDLL(path)
            found = tuple(getattr(lib, f) for f in functions)
        except (OSError, AttributeError):
            continue
        yield found


def quiet_libtiff() -> bool:
    """Stop libtiff printing errors that GDAL does not route on stderr.

    Sets libtiff's process-wide error handler to none; GDAL's own handler of each
    TIFF file (GDAL 3.7 or later) still gets every error of the files it opens, so
    nothing is lost but the duplicate lines. An older GDAL sets the process-wide
    handler itself when it loads, so this is left alone once such a GDAL is loaded.
    Best effort: where no libtiff is found, nothing changes.

    Returns:
        Whether a libtiff was found and quietened.
    """
    rasterio = sys.modules.get("rasterio")
    gdal = str(getattr(rasterio, "__gdal_version__", "3.7"))
    if tuple(int(x) for x in re.findall(r"\d+", gdal)[:2]) < (3, 7):
        return False  # that GDAL's own process-wide handler: kept
    done = False
    for (set_handler,) in library_functions("libtiff", "TIFFSetErrorHandler"):
        set_handler.argtypes = [ctypes.c_void_p]
        set_handler.restype = ctypes.c_void_p
        set_handler(None)
        done = True
    return done


#: Exit status of a command stopped by SIGTERM (128 + 15, as shells report it).
TERMINATED_EXIT = 128 + signal.SIGTERM
#: Exit status of a command stopped by Ctrl-C (SIGINT).
INTERRUPTED_EXIT = 128 + signal.SIGINT


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[list[int]]:
    """Turn SIGTERM into :class:`~alosmap.errors.Terminated` in the main thread.

    The first SIGTERM raises it where the main thread is (a ``KeyboardInterrupt``:
    the clean-up of Ctrl-C runs); later ones, during that clean-up, are noted only.
    Where SIGTERM is not at its default (ignored, or handled by a program that
    embeds alosmap), or outside the main thread, nothing changes. The previous
    handler is back after the block.

    Yields:
        The signals received, in order (a list that fills while the block runs).
    """
    from alosmap.errors import Terminated

    received: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield received
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = [
    "INTERRUPTED_EXIT",
    "TERMINATED_EXIT",
    "after_import",
    "configure_process",
    "gdal_cache_mb",
    "quiet_libtiff",
    "sigterm_interrupts",
]
