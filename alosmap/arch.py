"""Architecture configuration of the segmentation model (no torch import).

:class:`ArchConfig` describes the refined UPerNet-Swin of the paper completely; it is
stored inside every model file's spec so that a model can be rebuilt without the code
that trained it. :data:`PRESETS` holds the named configurations.

Choices the paper leaves open, made here and configurable:

* **Windows at 256×256**: stage grids are 64/32/16/8 tokens. The default per-stage
  windows ``(16, 16, 16, 8)`` make stages 3 and 4 global, the same arrangement
  SAR-W-MixMAE (``[8,8,8,4]`` at 128 px) and MixMIM (``[14,14,14,7]`` at 224 px) use.
* **High-resolution injection**: the post-patch-embedding map (stride 4, ``embed_dim``
  channels) becomes one more FPN lateral at stride 4, fused with the stage maps.
* **Refine-up widths**: ``refine_channels = (256, 128)`` for the paper preset.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from alosmap.errors import SpecError


@dataclass(frozen=True)
class ArchConfig:
    """Every hyper-parameter needed to build the model.

    Attributes:
        in_chans: input channels (1 for HH).
        img_size: tile size in pixels the encoder is built for (square).
        patch_size: patch-embedding stride (4 as in Swin).
        embed_dim: channels after patch embedding (C1).
        depths: Swin blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window per stage, in tokens; clamped to the stage grid.
        mlp_ratio: MLP hidden ratio of the Swin blocks.
        drop_path_rate: stochastic depth (training only).
        decoder_channels: UPerNet channels (512 in mmsegmentation).
        pool_scales: PPM bins on the deepest map.
        highres: inject the post-embedding map into the decoder (refinement i).
        refine_up: progressive refine-up head instead of ×4 interpolation (ii).
        refine_channels: channel widths of the two refine-up stages.
        dropout: dropout before the classifier.
        num_classes: output channels (9 for LULC, 1 for water).
    """

    in_chans: int = 1
    img_size: int = 256
    patch_size: int = 4
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: tuple[int, ...] = (16, 16, 16, 8)
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    decoder_channels: int = 512
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    highres: bool = True
    refine_up: bool = True
    refine_channels: tuple[int, int] = (256, 128)
    dropout: float = 0.1
    num_classes: int = 9
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_stages(self) -> int:
        """Number of Swin stages."""
        return len(self.depths)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Channels of each stage's output (C doubles per stage)."""
        return tuple(self.embed_dim * 2**i for i in range(self.num_stages))

    @property
    def stride(self) -> int:
        """Total downsampling of the deepest stage (32 for 4 stages)."""
        return self.patch_size * 2 ** (self.num_stages - 1)

    def replace(self, **changes: Any) -> ArchConfig:
        """Return a copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def stage_windows(self, img_size: int | None = None) -> tuple[int, ...]:
        """Each stage's attention window at ``img_size`` (default: the own one).

        A window larger than its stage's token grid is clamped to the grid (the
        stage then attends globally), as in :func:`stage_windows`.
        """
        size = self.img_size if img_size is None else img_size
        grid = size // self.patch_size
        return tuple(
            w for w, _ in stage_windows(self.window_size, grid, self.num_stages)
        )

    def tile_size_problem(self, size: int) -> str | None:
        """Why the model cannot be built for ``size``-px tiles, or None if it can.

        Every stage grid (``size / (patch_size · 2^i)`` tokens) must be whole and
        tiled by that stage's window (clamped to the grid).
        """
        if size < self.stride or size % self.stride:
            return f"{size} is not a multiple of the model stride {self.stride}"
        grid = size // self.patch_size
        for i, w in enumerate(self.stage_windows(size)):
            g = grid // 2**i
            if g % w:
                return (
                    f"stage {i + 1} has a {g}×{g} token grid, which its {w}×{w} "
                    "attention window does not tile"
                )
        return None

    def valid_tile_sizes(self, up_to: int | None = None) -> list[int]:
        """The tile sizes (multiples of the stride) the model can be built for.

        Args:
            up_to: largest size listed (default: 4 × ``img_size``, at least 1024).
        """
        top = up_to if up_to is not None else max(1024, 4 * self.img_size)
        sizes = range(self.stride, top + 1, self.stride)
        return [s for s in sizes if self.tile_size_problem(s) is None]

    def with_tile_size(self, size: int) -> ArchConfig:
        """The same network built for ``size``-px tiles (its weights fit both).

        The weights do not depend on the tile size, with one exception handled
        when they are loaded (:class:`~alosmap.models.swin.WindowAttention`): a
        stage whose window is clamped to a smaller grid keeps the relative position
        biases of the offsets that remain.

        Raises:
            SpecError: ``size`` does not fit the windows; the message lists the
                sizes that do.
        """
        problem = self.tile_size_problem(size)
        if problem is not None:
            valid = ", ".join(map(str, self.valid_tile_sizes()))
            raise SpecError(
                f"tile size {size} does not fit the model ({problem}); valid tile "
                f"sizes with windows {self.window_size}: {valid}"
            )
        return self.replace(img_size=size)

    def __post_init__(self) -> None:
        """Validate field values; raise :class:`SpecError` naming the field."""
        for name in ("depths", "num_heads", "window_size", "pool_scales"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(
            self, "refine_channels", tuple(int(v) for v in self.refine_channels)
        )
        n = len(self.depths)
        if n < 1:
            raise SpecError("arch.depths: need at least one stage")
        for name in ("num_heads", "window_size"):
            if len(getattr(self, name)) != n:
                raise SpecError(
                    f"arch.{name}: expected {n} values (one per stage), "
                    f"got {getattr(self, name)}"
                )
        for name in (
            "in_chans",
            "img_size",
            "patch_size",
            "embed_dim",
            "decoder_channels",
            "num_classes",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SpecError(f"arch.{name}: expected a positive integer, got {v!r}")
        if any(d < 1 for d in self.depths):
            raise SpecError(f"arch.depths: every stage needs >= 1 block: {self.depths}")
        for i, (c, h) in enumerate(
            zip(self.stage_channels, self.num_heads, strict=True)
        ):
            if h < 1 or c % h:
                raise SpecError(
                    f"arch.num_heads: stage {i} has {c} channels, not divisible "
                    f"by {h} heads"
                )
        if self.img_size % self.stride:
            raise SpecError(
                f"arch.img_size: {self.img_size} is not a multiple of the model "
                f"stride {self.stride}"
            )
        if len(self.refine_channels) != 2 or min(self.refine_channels) < 1:
            raise SpecError(
                f"arch.refine_channels: expected two positive widths, "
                f"got {self.refine_channels}"
            )
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.drop_path_rate < 1.0:
            raise SpecError("arch.dropout/drop_path_rate: expected a value in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary (tuples become lists)."""
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        """Build from :meth:`to_dict` output; unknown keys raise :class:`SpecError`."""
        check_fields(data, cls, "arch")
        try:
            return cls(**data)
        except TypeError as exc:
            raise SpecError(f"arch: {exc}") from exc


def stage_windows(
    windows: Sequence[int], grid: int, num_stages: int
) -> tuple[tuple[int, int], ...]:
    """Each stage's ``(h, w)`` window, clamped to its token grid (``ceil(grid / 2^i)``).

    Args:
        windows: the configured window of each stage.
        grid: token grid of the first stage (tile size / patch size).
        num_stages: number of stages.
    """
    out = []
    for i in range(num_stages):
        g = math.ceil(grid / 2**i)
        w = min(windows[i], g)
        out.append((w, w))
    return tuple(out)


def check_fields(
    data: Any, record: type, what: str, expected: str = "an object"
) -> dict[str, Any]:
    """Check that ``data`` is a dict whose keys are all fields of dataclass ``record``.

    Args:
        data: the parsed JSON value.
        record: the dataclass it must build.
        what: how messages name it (``arch``, ``spec``).
        expected: how messages name a dict (``an object``, ``a JSON object``).

    Returns:
        ``data``, now known to be a dict.

    Raises:
        SpecError: ``{what}: expected {expected}, got list`` or
            ``{what}: unknown field(s) a, b``.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{what}: expected {expected}, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(record)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"{what}: unknown field(s) {', '.join(unknown)}")
    return data


_SMALL = ArchConfig(
    embed_dim=32,
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 4, 8),
    window_size=(8, 8, 8, 8),
    decoder_channels=64,
    refine_channels=(32, 16),
)

#: Named architectures. ``paper`` is Section II's Swin-B + UPerNet (512 channels).
PRESETS: dict[str, ArchConfig] = {
    "paper": ArchConfig(),
    # Small enough to train on a CPU in minutes; used by the bundled demo models.
    "small": _SMALL,
    # Smallest sensible model, for unit tests: ``small`` with one block per stage
    # and narrower layers.
    "tiny": _SMALL.replace(
        embed_dim=16,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 2, 2),
        decoder_channels=32,
        refine_channels=(16, 16),
    ),
}


def get_preset(name: str, **overrides: Any) -> ArchConfig:
    """Return the preset ``name`` with ``overrides`` applied.

    Raises:
        SpecError: for an unknown preset, listing the valid names.
    """
    try:
        base = PRESETS[name]
    except KeyError:
        raise SpecError(
            f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}"
        ) from None
    return base.replace(**overrides) if overrides else base
