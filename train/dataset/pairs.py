"""The (image, label) pairs of a dataset built from the user's own data.

Two ways to list them:

* a **manifest** CSV (:func:`read_pairs_manifest`) with a header and the columns
  ``image``, ``label`` (required), ``split`` (train/val/test), ``date``
  (YYYY-MM-DD), ``scene`` (or ``group``: images of one scene or area, kept in
  one split), ``exclude`` (true/1/yes: the pair is listed but not used) and
  ``weight`` (the pair's patches' sampling weight in training, a finite number
  ≥ 0, default 1; 0 leaves the pair out as ``exclude`` does).
  Relative paths are relative to the CSV's directory;
* **images and a label directory** (:func:`match_pairs`): each image's label is
  ``LABEL_DIR / pattern``, the pattern naming the image with ``{name}`` (its file
  name, the default: the same file name) or ``{stem}`` (without the extension),
  e.g. ``{stem}_label.tif``; or with ``{key}``, the part of the image's name that an
  **image pattern** leaves: ``--image-pattern '{key}_S1Hand.tif'`` with
  ``--label-pattern '{key}_LabelHand.tif'`` pairs ``Bolivia_1_S1Hand.tif`` with
  ``Bolivia_1_LabelHand.tif``. With an image pattern, a directory of images stands
  for its files that match it.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from alosmap.errors import InputRasterError
from alosmap.train.dataset.splits import LABELLED_SPLITS
from alosmap.train.errors import DatasetBuildError

__all__ = [
    "MANIFEST_COLUMNS",
    "Pair",
    "image_files",
    "image_key_pattern",
    "match_pairs",
    "read_pairs_manifest",
]

#: Columns of an input manifest (``image`` and ``label`` are required).
MANIFEST_COLUMNS = (
    "image",
    "label",
    "split",
    "date",
    "scene",
    "group",
    "exclude",
    "weight",
)
#: ``exclude`` cells that leave a pair out, and those that keep it.
EXCLUDE_TRUE = ("true", "1", "yes", "y")
EXCLUDE_FALSE = ("false", "0", "no", "n", "")
#: Raster suffixes a directory of images is listed by.
RASTER_SUFFIXES = (".tif", ".tiff")
_REMOTE = re.compile(r"^(/vsi[a-z0-9_]+/|[a-z][a-z0-9+.-]*://)", re.IGNORECASE)
#: The files beside a JAXA 25 m mosaic tile's HH file that are not images to map:
#: its mask, date and local-incidence files and its HV band.
MOSAIC_SIBLING = re.compile(
    r"^[NS]\d{2}[EW]\d{3}_\d{2}_(mask|date|linci|sl_HV)(_[A-Za-z0-9]+)?\.tiff?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Pair:
    """One image and its label raster.

    Attributes:
        image: the SAR raster.
        label: the label raster (any grid: reprojected onto the image's patches).
        split: the split the manifest gives it (None: decided by the build).
        date: the acquisition date the manifest gives (None: the image's tags or
            name, if any).
        scene: the scene or group the manifest gives (None: the image file name).
        where: where it was listed (for messages), e.g. ``"pairs.csv row 3"``.
        exclude: the manifest's ``exclude`` column leaves it out of the build.
        weight: the sampling weight of its patches in training (the manifest's
            ``weight`` column; 0 leaves it out of the build).
    """

    image: Path
    label: Path
    split: str | None = None
    date: date | None = None
    scene: str | None = None
    where: str = ""
    exclude: bool = False
    weight: float = 1.0

    @property
    def group(self) -> str:
        """The split unit: the manifest's scene/group, else the image file name."""
        return self.scene or self.image.name


def image_files(
    paths: Sequence[str | os.PathLike[str]], *, skip: re.Pattern[str] | None = None
) -> list[Path]:
    """Files as given; directories stand for their ``*.tif``/``*.tiff`` (by name).

    In a directory, the mask, date, incidence and HV files of JAXA 25 m mosaic
    tiles (:data:`MOSAIC_SIBLING`) are not images: the HH file reads them; nor are
    the files whose names ``skip`` matches.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(
                q
                for q in p.iterdir()
                if q.is_file()
                and q.suffix.lower() in RASTER_SUFFIXES
                and not MOSAIC_SIBLING.match(q.name)
                and not (skip is not None and skip.match(q.name))
            )
        else:
            out.append(p)
    return out


def image_key_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression of an ``--image-pattern`` such as ``{key}_S1Hand.tif``.

    ``{key}`` (exactly once) matches any non-empty part of a file name, ``*`` any
    part that is not the key; the rest is literal (case-sensitive).

    Raises:
        DatasetBuildError: no ``{key}``, or another ``{...}`` field.
    """
    parts = re.split(r"(\{[^{}]*\})", pattern)
    fields = [p for p in parts if p.startswith("{") and p.endswith("}")]
    if fields.count("{key}") != 1 or len(fields) != 1 or "/" in pattern:
        raise DatasetBuildError(
            f"--image-pattern {pattern!r}: name the images' file names with {{key}} "
            "once (the part shared with the label's name; '*' for any other part), "
            "e.g. '{key}_S1Hand.tif' with --label-pattern '{key}_LabelHand.tif'"
        )
    regex = "".join(
        "(?P<key>.+)" if p == "{key}" else ".*".join(re.escape(q) for q in p.split("*"))
        for p in parts
    )
    return re.compile(regex + r"\Z")


def _label_name(pattern: str, image: Path, key: str | None = None) -> str:
    fields = {"name": image.name, "stem": image.stem}
    if key is not None:
        fields["key"] = key
    try:
        name = pattern.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        with_key = (
            ", {key} (the part --image-pattern leaves)"
            if key is not None
            else "; {key} needs --image-pattern"
        )
        raise DatasetBuildError(
            f"--label-pattern {pattern!r}: use {{name}} (the image's file name) or "
            f"{{stem}} (without its extension){with_key}, e.g. '{{stem}}_label.tif' "
            f"({exc!r})"
        ) from None
    if not name or "/" in name or "\\" in name:
        raise DatasetBuildError(
            f"--label-pattern {pattern!r}: gives {name!r} for {image.name}; it must "
            "give a file name inside --labels"
        )
    return name


def _image_keys(
    images: Sequence[str | os.PathLike[str]], image_pattern: str | None
) -> dict[Path, str | None]:
    """Each image and its ``{key}`` (None without an image pattern).

    With a pattern, a directory stands for its files that match it, and a file
    given by name must match it.

    Raises:
        DatasetBuildError: a bad pattern, a file given by name that does not match.
    """
    if image_pattern is None:
        return dict.fromkeys(image_files(images))
    regex = image_key_pattern(image_pattern)
    out: dict[Path, str | None] = {}
    for given in map(Path, images):
        for f in image_files([given]):
            m = regex.match(f.name)
            if m is not None:
                out[f] = m["key"]
            elif not given.is_dir():
                raise DatasetBuildError(
                    f"--images {f}: its name does not match --image-pattern "
                    f"{image_pattern!r}"
                )
    return out


def match_pairs(
    images: Sequence[str | os.PathLike[str]],
    label_dir: str | os.PathLike[str],
    pattern: str = "{name}",
    image_pattern: str | None = None,
) -> list[Pair]:
    """Pair each image with ``label_dir / pattern`` (see the module docs).

    Files that are another image's label are not images (so images and labels may
    share a directory).

    Args:
        images: image files and directories.
        label_dir: the directory of the labels.
        pattern: the label's file name: ``{name}``, ``{stem}``, ``{key}``.
        image_pattern: the images' file names, with ``{key}`` (see
            :func:`image_key_pattern`); None: every raster of a directory.

    Raises:
        InputRasterError: no label directory, no images, images without a label.
        DatasetBuildError: a bad pattern, a pattern that names the image itself.
    """
    d = Path(label_dir)
    if not d.is_dir():
        raise InputRasterError(f"--labels {d}: label directory not found")
    keys = _image_keys(images, image_pattern)
    files = list(keys)
    labels = {f: d / _label_name(pattern, f, keys[f]) for f in files}
    label_set = {_key(p) for p in labels.values()}
    files = [f for f in files if _key(f) not in label_set or _key(labels[f]) == _key(f)]
    if not files:
        matching = f" matching {image_pattern!r}" if image_pattern else ""
        raise InputRasterError(
            f"--images {', '.join(map(str, images))}: no images{matching}"
        )
    same = [f.name for f in files if _key(labels[f]) == _key(f)]
    if same:
        raise DatasetBuildError(
            f"--label-pattern {pattern!r} with --labels {d} names the image itself "
            f"({same[0]}); give the label directory or a pattern such as "
            "'{stem}_label.tif'"
        )
    missing = [f for f in files if not labels[f].is_file()]
    if missing:
        shown = ", ".join(f"{f.name} → {labels[f]}" for f in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputRasterError(
            f"{len(missing)} image(s) without a label file: {shown}{more}; check "
            f"--labels and --label-pattern ({pattern!r}), or list the pairs in a "
            "--manifest"
        )
    return [Pair(f, labels[f], where=str(f)) for f in files]


def _key(p: Path) -> str:
    return os.path.normcase(os.path.abspath(p))


# ------------------------------------------------------------------- manifest
def _resolve(text: str, base: Path) -> Path:
    text = text.strip()
    if _REMOTE.match(text):
        return Path(text)
    p = Path(text).expanduser()
    return p if p.is_absolute() else Path(os.path.abspath(base / p))


def _parse_date(text: str, where: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", text)
    try:
        if m:
            return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        pass
    raise DatasetBuildError(f"{where}: date {text!r} is not YYYY-MM-DD")


def _header(fields: Sequence[str] | None, path: Path) -> dict[str, str]:
    """Manifest column name (as written) → its canonical name."""
    if not fields:
        raise DatasetBuildError(f"--manifest {path}: empty (expected a header row)")
    names = {f: f.strip().lower() for f in fields}
    unknown = [f for f, n in names.items() if n not in MANIFEST_COLUMNS]
    if unknown:
        raise DatasetBuildError(
            f"--manifest {path}: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"the columns are {', '.join(MANIFEST_COLUMNS)} (image and label required)"
        )
    missing = [c for c in ("image", "label") if c not in names.values()]
    if missing:
        raise DatasetBuildError(
            f"--manifest {path}: no {' or '.join(missing)} column; the header must "
            "name image and label (and optionally split, date, scene, exclude, "
            "weight)"
        )
    if "scene" in names.values() and "group" in names.values():
        raise DatasetBuildError(
            f"--manifest {path}: give a scene or a group column, not both"
        )
    return names


def _pair_from_row(row: dict[str, str], base: Path, where: str) -> Pair:
    image, label = (row.get(k, "").strip() for k in ("image", "label"))
    if not image or not label:
        raise DatasetBuildError(f"{where}: the image and label cells must not be empty")
    split = row.get("split", "").strip().lower() or None
    if split is not None and split not in LABELLED_SPLITS:
        raise DatasetBuildError(
            f"{where}: split {row['split']!r} is not one of "
            f"{', '.join(LABELLED_SPLITS)} (or empty)"
        )
    scene = (row.get("scene") or row.get("group") or "").strip() or None
    exclude = row.get("exclude", "").strip().lower()
    if exclude not in EXCLUDE_TRUE + EXCLUDE_FALSE:
        raise DatasetBuildError(
            f"{where}: exclude {row['exclude']!r} is not one of true, 1, yes (leave "
            "the pair out) or false, 0, no, empty (use it)"
        )
    return Pair(
        _resolve(image, base),
        _resolve(label, base),
        split,
        _parse_date(row.get("date", ""), where),
        scene,
        where,
        exclude in EXCLUDE_TRUE,
        _parse_weight(row.get("weight", ""), where),
    )


def _parse_weight(text: str, where: str) -> float:
    """A ``weight`` cell: a finite number ≥ 0 (empty: 1).

    Raises:
        DatasetBuildError: anything else.
    """
    text = text.strip()
    if not text:
        return 1.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0.0):
        raise DatasetBuildError(
            f"{where}: weight {text!r} is not a finite number ≥ 0 (the sampling "
            "weight of the pair's patches; 0 leaves it out; empty: 1)"
        )
    return value


def read_pairs_manifest(path: str | os.PathLike[str]) -> list[Pair]:
    """The pairs of a manifest CSV (see the module docs).

    Raises:
        DatasetBuildError: an unreadable file, missing or unknown columns, an
            empty cell, a bad split or date, a split column filled in some rows
            only, an image listed twice.
    """
    p = Path(path)
    try:
        with p.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            names = _header(reader.fieldnames, p)
            rows = [
                ({names[k]: v or "" for k, v in r.items() if k in names}, i)
                for i, r in enumerate(reader, 2)
                if any((v or "").strip() for k, v in r.items() if k in names)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetBuildError(f"--manifest {p}: cannot read it ({exc})") from exc
    pairs = [_pair_from_row(r, p.parent, f"--manifest {p} row {i}") for r, i in rows]
    if not pairs:
        raise DatasetBuildError(f"--manifest {p}: no rows after the header")
    given = [q for q in pairs if q.split is not None]
    if given and len(given) != len(pairs):
        empty = next(q for q in pairs if q.split is None)
        raise DatasetBuildError(
            f"{empty.where}: the split cell is empty while other rows give one; fill "
            "the split column in every row or leave it out"
        )
    seen: dict[str, str] = {}
    for q in pairs:
        k = _key(q.image)
        if k in seen:
            raise DatasetBuildError(
                f"{q.where}: image {q.image} is listed twice (also {seen[k]})"
            )
        seen[k] = q.where
    return pairs
