"""FP16 graph surgery on exported ONNX models: fp32 islands and converter repairs.

An fp32 graph from :func:`~alosmap.export.onnx.export_onnx` is converted with ONNX
Runtime's ``onnxruntime.transformers.float16`` converter (it ships with every ONNX
Runtime wheel), keeping the graph input and output float32 (so every runtime still
sees ``float32 in → float32 out``) and the nodes :func:`fp32_sensitive_nodes`
selects in fp32: LayerNormalization, Softmax and the ReduceMean/Sub/Pow/Add/Sqrt/Div
chain of a decomposed LayerNorm. Reductions over a 32-768-channel axis and ``exp``
are where fp16 loses Swin's accuracy (the same trap as TensorRT FP16, which uses
the same selection). Casting the PyTorch model to half before export was not
chosen: it gives fp16 graph I/O and cannot keep individual ops in fp32. ONNX
Runtime's CPU provider runs fp16 graphs by casting around ops that lack fp16
kernels, so a CPU parity check measures fp16 weights and fp16 activations between
ops, not the fp16 arithmetic of a GPU.

The converter leaves some damage behind that :func:`convert_fp16` repairs:
identical Cast nodes written twice, Cast nodes placed after their consumers and
stale fp32 ``value_info``.
"""

from __future__ import annotations

import heapq
import logging
from typing import Any

from alosmap.errors import ModelFileError

logger = logging.getLogger(__name__)

#: ONNX ops that are always kept in fp32 in FP16 models (ONNX and TensorRT).
FP32_OPS = ("LayerNormalization", "Softmax", "LogSoftmax")


def name_nodes(graph: Any) -> None:
    """Give every unnamed node of ``graph`` a unique name (``<op>_<index>``).

    The FP16 and TensorRT precision rules address nodes by name.
    """
    used = {n.name for n in graph.node if n.name}
    for i, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def fp32_sensitive_nodes(model: Any) -> list[str]:
    """Names of the nodes an FP16 build must keep in fp32, in graph order.

    These are the ops of :data:`FP32_OPS` (LayerNormalization, Softmax, LogSoftmax)
    and every decomposed LayerNorm, as older opsets and some exporters write it::

        m = ReduceMean(x); d = Sub(x, m); v = ReduceMean(Pow(d, 2))   (or Mul(d, d))
        y = Div(d, Sqrt(Add(v, eps)))

    of which ReduceMean, Sub, Pow/Mul, ReduceMean, Add, Sqrt and Div are selected (the
    affine Mul/Add that follows is safe in fp16: its input is normalised). The match
    walks producer links back from each ``Sqrt``, so unrelated Pow or ReduceMean
    nodes stay fp16.

    Args:
        model: an ``onnx.ModelProto`` (or its ``GraphProto``); nodes need names
            (:func:`~alosmap.export.onnx.export_onnx` guarantees them).

    Returns:
        Node names.
    """
    graph = getattr(model, "graph", model)
    nodes = list(graph.node)
    producer = {out: n for n in nodes for out in n.output if out}
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)

    def made_by(tensor: str, *ops: str) -> Any:
        node = producer.get(tensor)
        return node if node is not None and node.op_type in ops else None

    keep = {id(n) for n in nodes if n.op_type in FP32_OPS}
    for sqrt in (n for n in nodes if n.op_type == "Sqrt"):
        add = made_by(sqrt.input[0], "Add")
        var = add and (
            made_by(add.input[0], "ReduceMean") or made_by(add.input[1], "ReduceMean")
        )
        sq = var and made_by(var.input[0], "Pow", "Mul")
        if not sq or (sq.op_type == "Mul" and sq.input[0] != sq.input[1]):
            continue
        sub = made_by(sq.input[0], "Sub")
        mean = sub and made_by(sub.input[1], "ReduceMean")
        if not mean or mean.input[0] != sub.input[0]:
            continue
        divs = [
            d
            for d in consumers.get(sqrt.output[0], [])
            if d.op_type == "Div" and d.input[0] == sub.output[0]
        ]
        keep.update(id(n) for n in (mean, sub, sq, var, add, sqrt, *divs))
    return [n.name for n in nodes if id(n) in keep]


def convert_fp16(model: Any) -> Any:
    """Convert an fp32 ``ModelProto`` to fp16, keeping sensitive nodes and I/O fp32.

    Uses ``onnxruntime.transformers.float16.convert_float_to_float16`` with
    ``keep_io_types=True`` and :func:`fp32_sensitive_nodes` as the node block list,
    then repairs what the converter leaves behind: identical Cast nodes written
    twice when two fp32 nodes read the same fp16 tensor (a decomposed LayerNorm's
    ReduceMean and Sub), Cast nodes appended after their consumers, and stale fp32
    ``value_info``.

    Args:
        model: the fp32 model (modified in place).

    Returns:
        The fp16 model.

    Raises:
        BackendUnavailableError: if ONNX Runtime is not installed.
    """
    from alosmap._imports import lazy_import

    float16 = lazy_import("onnxruntime.transformers.float16")
    name_nodes(model.graph)
    keep = fp32_sensitive_nodes(model)
    # the converter logs one warning per initializer value it clips to fp16 range
    conv_log = logging.getLogger("onnxruntime.transformers.float16")
    level = conv_log.level
    conv_log.setLevel(logging.ERROR)
    try:
        out = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST),
            node_block_list=keep,
        )
    finally:
        conv_log.setLevel(level)
    _drop_duplicate_nodes(out.graph)
    _toposort(out.graph)
    del out.graph.value_info[:]
    logger.info("fp16: %d nodes kept in fp32", len(keep))
    return out


def _drop_duplicate_nodes(graph: Any) -> None:
    """Remove exact copies of a node that writes an already-written tensor.

    Raises:
        ModelFileError: two different nodes write the same tensor.
    """
    writers: dict[str, bytes] = {}
    kept = []
    for node in graph.node:
        blob = node.SerializeToString()
        seen = [writers.get(o) for o in node.output if o in writers]
        if seen and all(b == blob for b in seen):
            continue  # a duplicate of an earlier node
        if seen:
            raise ModelFileError(
                f"ONNX graph: node {node.name!r} writes a tensor another node writes"
            )
        writers.update((o, blob) for o in node.output if o)
        kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def _toposort(graph: Any) -> None:
    """Reorder ``graph.node`` so every input is produced before it is used.

    Kahn's algorithm; among ready nodes the original order wins, so an already
    sorted graph is left as it is.

    Raises:
        ModelFileError: an input no node produces, or a cycle.
    """
    nodes = list(graph.node)
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    available.add("")  # an omitted optional input
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    missing = [0] * len(nodes)
    users: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in set(node.input):
            if name in available:
                continue
            if name not in producer:
                raise ModelFileError(
                    f"ONNX graph: input {name!r} of node {node.name!r} is not produced"
                )
            missing[i] += 1
            users.setdefault(producer[name], []).append(i)
    heap = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        i = heapq.heappop(heap)
        order.append(i)
        for j in users.get(i, []):
            missing[j] -= 1
            if missing[j] == 0:
                heapq.heappush(heap, j)
    if len(order) != len(nodes):
        raise ModelFileError("ONNX graph has a cycle; cannot order its nodes")
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
