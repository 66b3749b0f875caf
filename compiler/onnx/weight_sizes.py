"""The bytes of a model's conv/gemm/matmul weights, from the tensors' dims, before any weight is
read: a model far too large for a microcontroller's flash is refused without loading it (a
576 MB Gemm for cortex-m7 in well under 2 s, where loading it took a minute and 4 GB).

    >>> weight_sizes("big.onnx", int8=False)           # doctest: +SKIP
    [('w', 576000000)]
"""

from __future__ import annotations

import os

import numpy as np
import onnx

from nnc.compiler.onnx.importer import load_model

# ONNX ops whose second input is the weight operand (the graph IR's conv/gemm/matmul)
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def _declared_nbytes(t: onnx.TensorProto) -> int | None:
    """Elements x itemsize from the dims; None where external data's length disagrees (a
    damaged file: the importer names the problem when it loads the data)."""
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    if any(d < 0 for d in t.dims):
        return None
    nbytes = int(np.prod([int(d) for d in t.dims], dtype=object)) * itemsize
    if t.data_location == onnx.TensorProto.EXTERNAL:
        length = {e.key: e.value for e in t.external_data}.get("length")
        if length is not None and (not length.isdigit() or int(length) != nbytes):
            return None
    return nbytes


def weight_sizes(model: str | os.PathLike[str] | onnx.ModelProto,
                 int8: bool) -> list[tuple[str, int]]:
    """(initializer, bytes) of the weight operands of the main graph's Conv/ConvTranspose/Gemm/
    MatMul nodes (1 byte per element with `int8`), loading the model without external data."""
    proto = load_model(model, external_data=False)
    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    names = {n.input[1] for n in g.node
             if n.op_type in WEIGHT_OPS and n.domain in ("", "ai.onnx") and len(n.input) > 1
             and n.input[1] in inits}
    sizes = []
    for name in sorted(names):
        nbytes = _declared_nbytes(inits[name])
        if nbytes is not None:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(inits[name].data_type))
            sizes.append((name, nbytes // itemsize.itemsize if int8 else nbytes))
    return sizes
