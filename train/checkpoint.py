"""Pretrained encoder loading, encoder files, and exact-resume checkpoints.

**Encoder checkpoints accepted by** ``--pretrained``:

(a) *alosmap encoder files* (what ``alosmap train pretrain`` writes, see
    :func:`save_encoder`): a ``.safetensors`` file whose tensors are the
    :class:`~alosmap.models.SwinEncoder` state dict in timm names
    (``patch_embed.proj.weight``, ``layers.2.blocks.5.attn.qkv.weight``,
    ``out_norms.3.weight`` …), optionally prefixed ``encoder.``, with the header
    metadata ``{"alosmap.encoder": <ArchConfig JSON>, "format": "pt"}``. The
    metadata is informative (the loader matches by key and shape).
(b) *MixMIM / SAR-W-MixMAE* ``.pth`` files: a dict with a ``"model"`` state dict,
    read with ``torch.load(weights_only=True)`` only (a file that needs arbitrary
    unpickling is refused). Mapping: drop ``absolute_pos_embed`` (ours is a fixed
    sin-cos buffer), ``mask_token``, ``decoder*`` and ``head.*`` keys; the final
    ``norm.*`` becomes ``out_norms.{last}.*``; a multi-channel patch embedding
    (SAR-W-MixMAE's VH+VV) is **summed over its input channels** to take the one HH
    band (what timm's ``adapt_input_conv`` does for RGB → grey: a single normalised
    band fed to both of two correlated, similarly normalised inputs gives the same
    pre-activation, whereas the mean would halve it); then timm's
    ``checkpoint_filter_fn`` renames ``layers.i.downsample`` →
    ``layers.(i+1).downsample`` and resizes relative position bias tables to our
    windows (and a patch embedding of another size). Only this conversion needs
    timm, an optional dependency (``pip install 'alosmap[mixmim]'``), imported only
    for a checkpoint that needs it: for keys already in the encoder's layout with
    its shapes (every alosmap encoder file, a MixMIM checkpoint already converted)
    the filter is the identity and is not called.

A full alosmap model file (``alosmap.spec`` metadata) or a file with no encoder key
is refused with :class:`CheckpointError`; a shape mismatch (another preset) names
the first mismatching key.

**Complete models accepted by** ``--init-from`` (:func:`read_init_model`,
:func:`load_init_weights`): an alosmap model ``.safetensors`` (spec in the header:
the bundled models, an earlier run's ``model.safetensors``): encoder, decoder and
head, strictly (every key, every shape), or all but the head (``head.*``) when a
new head is trained for another legend.

**Resume checkpoints** (``OUT_DIR/last.pt``) are written with :func:`torch.save`
through a temporary file and :func:`os.replace`, and read back with
``weights_only=True``: RNG states are stored as tensors and plain lists.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from alosmap._fileio import atomic_write, make_readable
from alosmap.arch import ArchConfig
from alosmap.errors import ModelFileError, OutputExistsError, SpecError
from alosmap.spec import ModelSpec
from alosmap.train.errors import CheckpointError

__all__ = [
    "ENCODER_KEY",
    "CheckpointError",
    "InitModel",
    "LoadReport",
    "atomic_torch_save",
    "capture_rng",
    "load_init_weights",
    "load_pretrained_encoder",
    "load_resume",
    "make_readable",
    "open_run",
    "read_init_model",
    "restore_rng",
    "save_encoder",
]

#: Metadata key of an alosmap encoder file (value: the ArchConfig JSON).
ENCODER_KEY = "alosmap.encoder"

_DROP = re.compile(
    r"^(absolute_pos_embed|mask_token|decoder|head\.|fc_norm\.)"
    r"|relative_position_index|attn_mask"
)
_PREFIXES = ("module.", "encoder.", "backbone.")
_ENCODER_ROOTS = ("patch_embed", "layers", "out_norms")


@dataclass
class LoadReport:
    """What :func:`load_pretrained_encoder` did.

    Attributes:
        source: ``"alosmap-encoder"`` or ``"mixmim"``.
        matched: encoder keys loaded from the file.
        missing: encoder keys the file did not provide (left at initialisation).
        unexpected: file keys with no place in the encoder (ignored).
        dropped: file keys discarded on purpose (APE, decoder, mask token, head).
        notes: adaptations made (channel sum, renamed norm, resized tables).
    """

    source: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few human-readable lines."""

        def head(keys: list[str]) -> str:
            more = f", … (+{len(keys) - 5})" if len(keys) > 5 else ""
            return ", ".join(keys[:5]) + more

        lines = [
            f"pretrained encoder ({self.source}): {len(self.matched)} keys matched, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.dropped)} dropped"
        ]
        if self.missing:
            lines.append(f"  missing (left at initialisation): {head(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected (ignored): {head(self.unexpected)}")
        lines.extend(f"  {n}" for n in self.notes)
        return "\n".join(lines)


def save_encoder(
    encoder: nn.Module, arch: ArchConfig, path: str | os.PathLike[str]
) -> Path:
    """Write an alosmap encoder file (layout (a) of the module docs), atomically.

    Args:
        encoder: a :class:`~alosmap.models.SwinEncoder`.
        arch: its architecture (stored as metadata).
        path: destination ``.safetensors``.
    """
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
    meta = {ENCODER_KEY: json.dumps(arch.to_dict(), sort_keys=True), "format": "pt"}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def _unpickling_detail(exc: BaseException) -> str:
    """The reason in ``torch.load(weights_only=True)``'s refusal, on one line.

    PyTorch wraps it in paragraphs of advice (worded differently by version); kept
    is ``GLOBAL <name>`` for a pickle that asks for code (the attack or a custom
    class), else the unpickler's own reason (``Unsupported operand 110`` for a file
    that is no pickle of tensors), else the last line.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"GLOBAL {found.group(1)}"
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if found:
        return found.group(1).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _read_state(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Tensors of ``path`` and the source kind, refusing anything unsafe."""
    if not path.is_file():
        raise CheckpointError(f"pretrained checkpoint not found: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            state = load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(
                f"{path}: not a readable .safetensors file ({exc})"
            ) from exc
        if "alosmap.spec" in meta:
            raise CheckpointError(
                f"{path} is a complete alosmap model, not an encoder checkpoint; "
                "--pretrained takes an encoder from `alosmap train pretrain` or a "
                "MixMIM/SAR-W-MixMAE .pth"
            )
        return state, "alosmap-encoder"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickling_detail(exc)
        if not detail.startswith("GLOBAL"):  # not a pickle of tensors at all
            raise CheckpointError(
                f"{path}: not a readable checkpoint ({detail})"
            ) from exc
        raise CheckpointError(
            f"{path} cannot be loaded safely (it needs arbitrary unpickling: "
            f"{detail}); re-save its state dict with plain tensors "
            "(torch.save({'model': model.state_dict()}, ...)) and try again"
        ) from exc
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(obj)}")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return state, "mixmim"


def _strip_prefix(key: str) -> str:
    for p in _PREFIXES:
        if key.startswith(p):
            return key[len(p) :]
    return key


def _conversion_needed(state: dict[str, torch.Tensor], encoder: nn.Module) -> str:
    """Why ``state`` needs timm's ``checkpoint_filter_fn`` ("" when it does not).

    The filter renames the downsample layers of MixMIM's layout and resamples a
    patch embedding of another kernel size; otherwise it only drops the
    ``relative_position_index`` and ``attn_mask`` buffers, which ``_DROP`` has
    already dropped, and resizes relative position bias tables of other windows,
    which :func:`_resize_bias_tables` does as loading a model at another tile size
    does (it would return ``state`` unchanged).
    """
    if "layers.0.downsample.reduction.weight" in state:
        return "MixMIM's layout, downsampling at the end of a stage"
    w = state.get("patch_embed.proj.weight")
    own = encoder.get_parameter("patch_embed.proj.weight")
    if w is not None and tuple(w.shape[-2:]) != tuple(own.shape[-2:]):
        return f"a {tuple(w.shape[-2:])} patch embedding to resample"
    return ""


_BIAS_TABLE = "relative_position_bias_table"


def _resize_bias_tables(
    state: dict[str, torch.Tensor], encoder: nn.Module
) -> list[str]:
    """Resize, in ``state``, bias tables of other windows to the encoder's windows.

    An encoder pretrained at another tile size (windows clamped to other stage
    grids) loads as a model does at another tile size:
    :func:`~alosmap.models.swin.resize_bias_table` (centre crop or bicubic), the
    function :class:`~alosmap.models.swin.WindowAttention` loads with.

    Returns:
        The keys resized.
    """
    from alosmap.models.swin import resize_bias_table

    resized = []
    for k, v in list(state.items()):
        if not k.endswith(_BIAS_TABLE):
            continue
        try:
            attn = encoder.get_submodule(k[: -len(_BIAS_TABLE) - 1])
        except AttributeError:
            continue  # a block the encoder lacks: reported as unexpected
        own = cast(torch.Tensor, getattr(attn, _BIAS_TABLE, None))
        if own is None or v.shape == own.shape or v.shape[1:] != own.shape[1:]:
            continue
        table = resize_bias_table(v, attn.window_size)
        if table is not None and table.shape == own.shape:
            state[k] = table
            resized.append(k)
    return resized


def _map_swin_keys(
    state: dict[str, torch.Tensor], encoder: nn.Module, path: Path
) -> dict[str, torch.Tensor]:
    """``state`` through timm's ``checkpoint_filter_fn`` where it changes anything.

    Raises:
        CheckpointError: the conversion fails, or is needed and timm is missing.
    """
    try:
        reason = _conversion_needed(state, encoder)
        if not reason:
            return dict(state)
        try:
            from timm.models.swin_transformer import checkpoint_filter_fn
        except ImportError:
            raise CheckpointError(
                f"{path}: converting it ({reason}) needs timm, which is not "
                "installed: pip install 'alosmap[mixmim]' (or pip install timm)"
            ) from None
        return checkpoint_filter_fn(state, encoder)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot map onto the encoder ({exc})") from exc


def load_pretrained_encoder(
    encoder: nn.Module, path: str | os.PathLike[str]
) -> LoadReport:
    """Load an encoder checkpoint into ``encoder`` (non-strict, reported).

    Args:
        encoder: the model's :class:`~alosmap.models.SwinEncoder`.
        path: an alosmap encoder ``.safetensors`` or a MixMIM-layout ``.pth``.

    Returns:
        What matched, what was missing, unexpected or dropped.

    Raises:
        CheckpointError: unsafe or unreadable file, a full model file, no encoder
            key at all, or a shape mismatch (naming the first mismatching key).
    """
    p = Path(path)
    raw, source = _read_state(p)
    report = LoadReport(source=source)
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        k = _strip_prefix(key)
        if _DROP.search(k):
            report.dropped.append(key)
        else:
            state[k] = value

    own = encoder.state_dict()
    last = len(cast(nn.ModuleList, encoder.layers)) - 1
    if "norm.weight" in state and f"out_norms.{last}.weight" not in state:
        for suffix in ("weight", "bias"):
            if f"norm.{suffix}" in state:
                state[f"out_norms.{last}.{suffix}"] = state.pop(f"norm.{suffix}")
        report.notes.append(f"final norm.* loaded into out_norms.{last}.*")
    w = state.get("patch_embed.proj.weight")
    want = own["patch_embed.proj.weight"]
    if w is not None and w.ndim == 4 and w.shape[1] != want.shape[1] == 1:
        state["patch_embed.proj.weight"] = w.sum(dim=1, keepdim=True)
        report.notes.append(
            f"patch embedding summed over its {w.shape[1]} input channels → 1 (HH)"
        )

    # only Swin-shaped keys go through timm's filter; the rest are reported
    swin = {k: v for k, v in state.items() if k.split(".")[0] in _ENCODER_ROOTS}
    other = [k for k in state if k not in swin]
    resized = _resize_bias_tables(swin, encoder)
    mapped = _map_swin_keys(swin, encoder, p)
    resized += [
        k
        for k, v in swin.items()
        if k.endswith(_BIAS_TABLE) and tuple(mapped.get(k, v).shape) != tuple(v.shape)
    ]
    if resized:
        report.notes.append(f"{len(resized)} relative position bias tables resized")
    if not any(k in own for k in mapped):
        raise CheckpointError(
            f"{p} holds no Swin encoder weights (none of its {len(raw)} keys, e.g. "
            f"{', '.join(list(raw)[:3]) or 'none'}, is an encoder key); --pretrained "
            "takes an encoder from `alosmap train pretrain` or a MixMIM/"
            "SAR-W-MixMAE checkpoint"
        )
    state = mapped

    for key in own:  # in model order, so the first mismatch is the earliest
        found = state.get(key)
        if found is not None and tuple(found.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{p}: {key} has shape {tuple(found.shape)} in the checkpoint but "
                f"{tuple(own[key].shape)} in this model; was it pretrained with "
                "another --preset?"
            )
    result = encoder.load_state_dict(state, strict=False)
    report.missing = list(result.missing_keys)
    report.unexpected = [*other, *result.unexpected_keys]
    report.matched = [k for k in state if k in own]
    return report


# --------------------------------------------------------------------------------------
# Complete models to start from (--init-from)
# --------------------------------------------------------------------------------------


@dataclass
class InitModel:
    """A complete trained model that a finetuning run starts from.

    Attributes:
        path: the model file.
        spec: its spec (architecture, legend, radiometry).
        state: its tensors (encoder, decoder and head).
    """

    path: Path
    spec: ModelSpec
    state: dict[str, torch.Tensor]


def read_init_model(path: str | os.PathLike[str]) -> InitModel:
    """Read an alosmap model file (spec and tensors) to start finetuning from.

    Raises:
        CheckpointError: missing or unreadable file, an encoder checkpoint (which
            goes to ``--pretrained``), or a file without a valid spec.
    """
    from safetensors.torch import load_file

    from alosmap.spec import load_spec, read_safetensors_metadata

    p = Path(path)
    if p.suffix.lower() != ".safetensors":
        raise CheckpointError(
            f"--init-from {p}: expected an alosmap model .safetensors (ONNX and "
            "TensorRT files hold no trainable weights)"
        )
    try:
        if ENCODER_KEY in read_safetensors_metadata(p):
            raise CheckpointError(
                f"--init-from {p}: an encoder checkpoint, not a complete model; "
                "pass it as --pretrained"
            )
        spec = load_spec(p)
        state = load_file(str(p), device="cpu")
    except (ModelFileError, SpecError) as exc:
        raise CheckpointError(f"--init-from: {exc}") from exc
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"--init-from {p}: cannot read tensors ({exc})") from exc
    return InitModel(p, spec, state)


def load_init_weights(
    model: nn.Module, init: InitModel, *, reinit_head: bool = False
) -> str:
    """Load a complete model's weights into ``model`` (same architecture).

    Args:
        model: the :class:`~alosmap.models.SegmentationModel` to fill.
        init: what :func:`read_init_model` read.
        reinit_head: keep ``model``'s own (freshly initialised) head.

    Returns:
        One line saying what was loaded.

    Raises:
        CheckpointError: a key is missing, unexpected or of another shape.
    """
    state = init.state
    if reinit_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(
            f"--init-from {init.path}: its weights do not fit this model ({first})"
        ) from exc
    missing = [
        k for k in result.missing_keys if not (reinit_head and k.startswith("head."))
    ]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"--init-from {init.path}: its weights do not fit this model "
            f"({len(missing)} missing, e.g. {', '.join(missing[:3]) or '-'}; "
            f"{len(result.unexpected_keys)} unexpected, e.g. "
            f"{', '.join(result.unexpected_keys[:3]) or '-'})"
        )
    parts = (
        "encoder and decoder (new head)" if reinit_head else "encoder, decoder, head"
    )
    return f"initialised from {init.path} ({init.spec.name}): {parts}"


# --------------------------------------------------------------------------------------
# Exact-resume checkpoints
# --------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a ``weights_only``-loadable form."""
    version, mt, gauss = random.getstate()
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    name, keys, pos, has_gauss, cached = np_state
    state: dict[str, Any] = {
        "python": [version, list(mt), gauss],
        "numpy": [
            name,
            torch.from_numpy(keys.astype(np.int64)),
            pos,
            has_gauss,
            cached,
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng`."""
    version, mt, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(
        (name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached))
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename over it."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_resume(
    path: str | os.PathLike[str], kind: str = "alosmap-finetune"
) -> dict[str, Any]:
    """Read a resume checkpoint written by a training loop (``weights_only``).

    Args:
        path: the ``last.pt`` file.
        kind: the checkpoint's expected ``kind`` (``alosmap-finetune`` or
            ``alosmap-pretrain``).

    Raises:
        CheckpointError: unreadable, not one of ours, or of another kind.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot read the resume checkpoint ({exc})"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        found = ckpt.get("kind") if isinstance(ckpt, dict) else None
        what = kind.removeprefix("alosmap-")
        raise CheckpointError(
            f"{path}: not an alosmap {what} checkpoint"
            + (f" (it is {found!r})" if found else "")
            + "; choose another -o"
        )
    return ckpt


def open_run(
    out: Path,
    *,
    resume: bool,
    product: str,
    kind: str,
    now: dict[str, Any],
) -> dict[str, Any] | None:
    """The resume checkpoint of the run in ``out``, or None for a fresh run.

    Args:
        out: the run directory.
        resume: whether the user asked to resume (``--resume``).
        product: the file a finished run leaves (``model.safetensors``,
            ``encoder.safetensors``): present without ``last.pt``, the directory is
            someone else's result and is refused.
        kind: the checkpoint kind :func:`load_resume` expects.
        now: the options that must equal the checkpoint's ``config`` to resume.

    Raises:
        OutputExistsError: ``out`` holds a run or a result and may not be reused.
        CheckpointError: the checkpoint was written with other options (named).
    """
    last = out / "last.pt"
    if not last.is_file():
        if (out / product).exists():
            raise OutputExistsError(
                f"{out} already holds {product} but no last.pt to resume from; "
                "choose another -o"
            )
        return None
    if not resume:
        raise OutputExistsError(
            f"{out} already holds a run (last.pt); resume it with --resume "
            "or choose another -o"
        )
    ckpt = load_resume(last, kind=kind)
    old = ckpt["config"]
    diff = [
        f"{k}={old.get(k)!r} (now {v!r})" for k, v in now.items() if old.get(k) != v
    ]
    if diff:
        raise CheckpointError(
            f"{last} was written with other options: {'; '.join(diff)}; resume "
            "with the same options or choose another -o"
        )
    return ckpt
