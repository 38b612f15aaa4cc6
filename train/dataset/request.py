"""``build-dataset`` as one validated request, and the one entry that builds it.

:class:`BuildRequest` holds every option of both sources as given (None: left
out); building it checks that the options fit one source and each other, and
:func:`build` runs that source: the paper's (:mod:`.jaxa`: ``sar`` + ``lulc``) or
the user's pairs (:mod:`.general`: ``manifest``, or ``images`` + ``labels``).
The command line fills a request and calls :func:`build`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alosmap.classes import LABEL_PRESETS, Legend, LegendError, load_legend
from alosmap.train import defaults
from alosmap.train.dataset.images import ImageOptions
from alosmap.train.dataset.patch_store import BuildResult
from alosmap.train.errors import DatasetBuildError

__all__ = ["BuildRequest", "build"]

#: The paper's source accepts the legends of JAXA codes only.
_JAXA_LEGENDS = (None, "jaxa-lulc9", "jaxa-water")


@dataclass(frozen=True)
class BuildRequest:
    """The options of ``build-dataset``, checked (see ``--help`` for each).

    Paper's source: ``sar`` + ``lulc`` (+ ``anchors``, ``pretrain_months``,
    ``finetune_months``); the user's pairs: ``manifest`` or ``images`` (``sar``
    stands for them) + ``labels``, with ``legend`` and the options after it.
    ``min_valid`` / ``max_nodata``: one rule (give one; neither: the default).

    Raises:
        DatasetBuildError: options of the other source, options that contradict
            each other, a missing required option (the message names them).
    """

    output: Path
    sar: tuple[Path, ...] = ()
    lulc: Path | None = None
    anchors: int | None = None
    pretrain_months: str | None = None
    finetune_months: str | None = None
    manifest: Path | None = None
    images: tuple[Path, ...] = ()
    labels: Path | None = None
    label_pattern: str | None = None
    image_pattern: str | None = None
    legend: str | None = None
    label_nodata: tuple[float, ...] = ()
    label_band: int | None = None
    exclude_scenes: tuple[str, ...] = ()
    allow_missing_classes: bool = False
    split: str | None = None
    split_by: str | None = None
    split_file: Path | None = None
    patch_size: int = defaults.PATCH_SIZE
    stride: int | None = None
    min_valid: float | None = None
    max_nodata: float | None = None
    min_labelled: float = defaults.MIN_LABEL_FRACTION
    image: ImageOptions = field(default_factory=ImageOptions)
    seed: int = defaults.SEED
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.valid_rule  # noqa: B018  (checks the two options agree)
        if self.source == "jaxa":
            self._check_jaxa()
        else:
            self._check_pairs()

    # ------------------------------------------------------------ checks
    @property
    def source(self) -> str:
        """``jaxa`` (the paper's) or ``pairs`` (the user's)."""
        return "jaxa" if self.manifest is None and self.labels is None else "pairs"

    @property
    def valid_rule(self) -> tuple[float, float]:
        """``(min_valid, max_nodata)``: the one given and ``1 −`` it.

        Neither given: the default ``max_nodata`` and ``1 −`` it. Each is kept
        as given (the paper's source records ``max_nodata``).
        """
        lo, hi = self.min_valid, self.max_nodata
        if lo is not None and hi is not None and abs(lo - (1.0 - hi)) > 1e-9:
            raise DatasetBuildError(
                f"--min-valid {lo:g} and --max-nodata {hi:g} disagree "
                "(--min-valid = 1 − --max-nodata); give one"
            )
        if lo is None:
            hi = defaults.MAX_NODATA if hi is None else hi
            return 1.0 - hi, hi
        return lo, 1.0 - lo if hi is None else hi

    def _refuse(self, path: str, given: dict[str, Any]) -> None:
        """Refuse options of the other source (one line naming the first)."""
        for name, value in given.items():
            if value:
                raise DatasetBuildError(f"{name} does not apply to {path}")

    def _check_jaxa(self) -> None:
        if not self.sar or self.lulc is None:
            raise DatasetBuildError(
                "give --sar and --lulc (the paper's path: ALOS-2 scenes and JAXA "
                "tiles), or your own pairs with --manifest, or --images and --labels"
            )
        self._refuse(
            "the paper's path (--sar/--lulc)",
            {
                "--manifest": self.manifest,
                "--images": self.images,
                "--labels": self.labels,
                "--label-pattern": self.label_pattern,
                "--image-pattern": self.image_pattern,
                "--label-nodata": self.label_nodata,
                "--label-band": self.label_band,
                "--split-file": self.split_file,
                "--stride": self.stride,
                "--exclude-scene": self.exclude_scenes,
                "--allow-missing-classes": self.allow_missing_classes,
            },
        )
        if self.legend not in _JAXA_LEGENDS:
            raise DatasetBuildError(
                f"--legend {self.legend}: the paper's path (--lulc) stores JAXA "
                "codes, which serve jaxa-lulc9 and jaxa-water; for another legend "
                "list your pairs with --manifest or --images/--labels"
            )
        if self.split_by not in (None, "month"):
            raise DatasetBuildError(
                f"--split-by {self.split_by}: the paper's path splits by month "
                "(--pretrain-months/--finetune-months, then per patch); for scene "
                "or random splits list your pairs with --manifest or --images/--labels"
            )

    def _check_pairs(self) -> None:
        if self.sar and self.images:
            raise DatasetBuildError("give the images with --images or --sar, not both")
        self._refuse(
            "your own pairs (--manifest/--labels)",
            {
                "--lulc": self.lulc,
                "--anchors": self.anchors,
                "--pretrain-months": self.pretrain_months,
                "--finetune-months": self.finetune_months,
            },
        )
        if self.manifest is not None and (
            self.images or self.labels or self.label_pattern or self.image_pattern
        ):
            raise DatasetBuildError(
                "give your pairs with --manifest or with --images and --labels, "
                "not both"
            )
        if self.manifest is None and not self.pair_images:
            raise DatasetBuildError("--labels needs the images: --images FILE_OR_DIR")

    @property
    def pair_images(self) -> tuple[Path, ...]:
        """The images of ``--images`` (or ``--sar`` standing for them)."""
        return self.images or self.sar

    # ------------------------------------------------------------ sources
    def jaxa_config(self) -> Any:
        """The paper's :class:`~.jaxa.BuildConfig`; options left out: its defaults."""
        from alosmap.train.dataset.jaxa import BuildConfig, parse_months
        from alosmap.train.dataset.splits import parse_split

        given: dict[str, Any] = {}
        if self.anchors:
            given["anchors"] = self.anchors
        for side in ("pretrain", "finetune"):
            text = getattr(self, f"{side}_months")
            if text:
                given[f"{side}_months"] = parse_months(text, f"--{side}-months")
        if self.split:
            given["split"] = parse_split(self.split)
        return BuildConfig(
            **given,
            patch_size=self.patch_size,
            max_nodata=self.valid_rule[1],
            min_label_fraction=self.min_labelled,
            seed=self.seed,
        )

    def general_config(self) -> Any:
        """The :class:`~.general.GeneralConfig` of the user's pairs."""
        from alosmap.train.dataset.general import GeneralConfig
        from alosmap.train.dataset.splits import parse_split

        return GeneralConfig(
            patch_size=self.patch_size,
            stride=self.stride,
            min_valid=self.valid_rule[0],
            min_labelled=self.min_labelled,
            split=parse_split(self.split) if self.split else None,
            split_by=self.split_by,
            split_file=str(self.split_file) if self.split_file else None,
            seed=self.seed,
            label_band=self.label_band,
            exclude_scenes=self.exclude_scenes,
            allow_missing_classes=self.allow_missing_classes,
        )

    def pairs(self) -> tuple[list[Any], dict[str, Any]]:
        """The pairs of ``--manifest`` or ``--images`` + ``--labels``; their record."""
        from alosmap.train.dataset.pairs import match_pairs, read_pairs_manifest

        if self.manifest is not None:
            return read_pairs_manifest(self.manifest), {"manifest": str(self.manifest)}
        pattern = self.label_pattern or "{name}"
        assert self.labels is not None  # a pairs request has one or a manifest
        pairs = match_pairs(
            list(self.pair_images), self.labels, pattern, self.image_pattern
        )
        record = {"label_dir": str(self.labels), "label_pattern": pattern}
        if self.image_pattern:
            record["image_pattern"] = self.image_pattern
        return pairs, record

    def pairs_legend(self) -> Legend:
        """``--legend`` with the ``--label-nodata`` values ignored.

        Raises:
            DatasetBuildError: no legend, a bad one, or a non-integer value.
        """
        if self.legend is None:
            raise DatasetBuildError(
                "--legend is needed with --manifest/--labels: a preset "
                f"({', '.join(LABEL_PRESETS)}) or a YAML/JSON legend file "
                "(docs/dataset_format.md)"
            )
        extra = list(self.label_nodata)
        bad = [v for v in extra if not math.isnan(v) and not float(v).is_integer()]
        if bad:
            raise DatasetBuildError(
                f"--label-nodata {bad[0]:g}: label values are integers (NaN is "
                "always no label)"
            )
        try:
            legend = load_legend(self.legend)
        except LegendError as exc:
            raise DatasetBuildError(f"--legend: {exc}") from exc
        try:
            return legend.with_ignore(v for v in extra if not math.isnan(v))
        except LegendError as exc:
            raise DatasetBuildError(f"--label-nodata: {exc}") from exc


def build(request: BuildRequest, *, progress: bool = False) -> BuildResult:
    """Build the dataset ``request`` asks for, from its source.

    Raises:
        DatasetBuildError, InputRasterError, UnknownLabelValuesError,
        OutputExistsError, OutputPathError: see :func:`.jaxa.build_dataset` and
        :func:`.general.build_general`.
    """
    if request.source == "jaxa":
        from alosmap.train.dataset.jaxa import build_dataset, scene_files

        assert request.lulc is not None  # checked by the request
        return build_dataset(
            scene_files(list(request.sar)),
            request.lulc,
            request.output,
            request.jaxa_config(),
            overwrite=request.overwrite,
            progress=progress,
            image=request.image,
        )
    from alosmap.train.dataset.general import build_general

    pairs, inputs = request.pairs()
    legend = request.pairs_legend()
    # NaN is always no label (and not JSON): only the integer values are recorded
    inputs["label_nodata"] = [
        int(v) for v in request.label_nodata if float(v).is_integer()
    ]
    return build_general(
        pairs,
        legend,
        request.output,
        request.general_config(),
        image=request.image,
        legend_source=str(request.legend),
        inputs=inputs,
        overwrite=request.overwrite,
        progress=progress,
    )
