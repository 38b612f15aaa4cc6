"""Copy a finetuned model into the package as a demo model, as .safetensors and .onnx.

    python scripts/bundle_demo_model.py RUN/model.safetensors \
        alosmap/weights/lulc.safetensors
    python scripts/bundle_demo_model.py --onnx-only alosmap/weights/lulc.safetensors

The ``.safetensors`` file (float16 weights, labelled as demo weights) is what
training, finetuning and export start from; the ``.onnx`` file beside it (same
stem) is made from it by ``alosmap export onnx`` (dynamo exporter, parity-checked
against PyTorch on the sample_data/ scenes) and is the default model of
``alosmap predict`` and ``alosmap water``: it runs on ONNX Runtime alone, without
PyTorch. ``--onnx-only`` remakes only the ``.onnx`` from a bundled
``.safetensors``. The export is deterministic (the same bytes on every run).

To keep the package small, every float32 initializer of the graph whose values are
all float16 numbers (the demo weights are stored in float16) is stored as float16
with a ``Cast`` to float32 in front of its users: ONNX Runtime folds the casts when
it opens the session, so the graph computes with exactly the float32 weights of the
plain export (the same probabilities, bit for bit) from a file a third smaller.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from alosmap.spec import load_model, save_model

NOTE = (
    "DEMO WEIGHTS: small preset trained from scratch on synthetic ALOS-2-like scenes "
    "(alosmap.synthetic, scripts/train_demo_models.sh); not trained on real ALOS-2 "
    "data, not for real mapping"
)
#: Initializers smaller than this stay float32 (a Cast node costs more than it saves).
MIN_FP16_ELEMENTS = 16


def bundle_safetensors(src: Path, dst: Path) -> None:
    """Write ``src`` as a labelled demo model with float16 weights to ``dst``."""
    model, spec = load_model(src)
    spec = spec.replace(
        name=f"alosmap-demo-{spec.task}-small",
        provenance={**spec.provenance, "note": NOTE},
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    # stored as float16 to keep the package small; loading casts back to float32
    save_model(model.half(), spec, dst, overwrite=True)


def store_fp16_initializers(path: Path) -> int:
    """Store the float16-exact float32 initializers of ``path`` as float16 + Cast.

    Rewrites the file in place and checks it with ``onnx.checker``. Returns the
    number of initializers converted.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        exact = np.array_equal(half.astype(np.float32), values, equal_nan=True)
        if values.size < MIN_FP16_ELEMENTS or not exact:
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, f"{name}__fp16"))
        casts.append(
            helper.make_node(
                "Cast",
                [f"{name}__fp16"],
                [name],
                to=TensorProto.FLOAT,
                name=f"{name}__cast",
            )
        )
    for i, node in enumerate(casts):
        graph.node.insert(i, node)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return len(casts)


def bundle_onnx(safetensors: Path) -> Path:
    """Export ``safetensors`` to the ``.onnx`` beside it (parity-checked, compacted)."""
    from alosmap.export.onnx import export_onnx_file

    out = safetensors.with_suffix(".onnx")
    report = export_onnx_file(safetensors, out, overwrite=True)
    converted = store_fp16_initializers(out)
    print(
        f"{out}: parity {report.parity}, {converted} initializers stored as float16, "
        f"{out.stat().st_size / 2**20:.1f} MiB"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="finetuned model (.safetensors)")
    parser.add_argument(
        "dst", type=Path, nargs="?", help="bundled model to write (.safetensors)"
    )
    parser.add_argument(
        "--onnx-only",
        action="store_true",
        help="only remake the .onnx beside SRC (an already bundled model)",
    )
    args = parser.parse_args()
    if args.onnx_only:
        print(bundle_onnx(args.src))
        return
    if args.dst is None:
        parser.error("DST is required without --onnx-only")
    bundle_safetensors(args.src, args.dst)
    print(args.dst)
    print(bundle_onnx(args.dst))


if __name__ == "__main__":
    main()
