"""Reject invalid models before import, with the onnx checker's reason where it has one.

Without this, nnc made up its own meaning for models that are not valid ONNX: the last of two
initializers of one name (onnxruntime takes the first), a graph output listed twice (renamed
`y_1`), a file whose bytes are concatenated twice (protobuf merges the copies: every node twice),
unknown attributes ignored, and text fields that are not UTF-8 (a crash further on).

    >>> check_model(onnx.load("model.onnx"))      # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import onnx
from google.protobuf.descriptor import FieldDescriptor

from nnc.errors import NncError


def check_model(proto: onnx.ModelProto) -> None:
    """Raise NncError naming what makes `proto` invalid ONNX. These are the checks of
    `onnx.checker` (in its words) that change what the model means; the checker's other
    complaints (a graph output without a type, nodes out of order) onnxruntime accepts, and so
    does nnc."""
    bad = _non_utf8(proto, "model")
    if bad is not None:
        raise NncError(f"the model is not valid ONNX: {bad} is not UTF-8 text")
    if not 1 <= proto.ir_version <= onnx.IR_VERSION:
        why = ("the model does not have an ir_version set properly" if proto.ir_version < 1 else
               f"its ir_version {proto.ir_version} is higher than the installed onnx knows "
               f"({onnx.IR_VERSION})")
        raise NncError(f"the model is not valid ONNX (onnx checker: {why}); re-export it")
    if not proto.HasField("graph"):
        raise NncError("the model is not valid ONNX: it has no graph")
    g = proto.graph
    if not g.output:
        raise NncError("the model has no graph outputs: there is nothing to compute")
    _unique("graph output", [vi.name for vi in g.output], "is listed twice")
    _unique("initializer", [t.name for t in g.initializer],
            "is defined twice (onnx checker: initializer name is not unique)")
    init = {t.name for t in g.initializer}
    _unique("graph input", [vi.name for vi in g.input if vi.name not in init],
            "is listed twice (onnx checker: not in single static assignment form; a file "
            "holding the model twice looks like this)")
    opsets = {o.domain or "ai.onnx": int(o.version) for o in proto.opset_import}
    _check_graph(g, opsets, init)


def _unique(what: str, names: list[str], problem: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise NncError(f"the model is not valid ONNX: {what} {n!r} {problem}")
        seen.add(n)


def _check_graph(g: onnx.GraphProto, opsets: dict[str, int], inits: set[str]) -> None:
    """SSA (each value produced once) and, for ONNX-domain nodes, attributes the op's schema
    knows, of its type; subgraphs too."""
    produced: dict[str, str] = {}
    for node in g.node:
        for o in node.output:
            if not o:
                continue
            if o in produced or o in inits:
                first = produced.get(o, "an initializer")
                raise NncError(f"the model is not valid ONNX: value {o!r} is produced twice "
                               f"(by {first} and node {node.name!r}; onnx checker: not in single "
                               "static assignment form)")
            produced[o] = f"node {node.name!r}"
        _check_attributes(node, opsets)
        for a in node.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                        list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []):
                _check_graph(sub, opsets, {t.name for t in sub.initializer})


_ATTR_NAMES = {v: k for k, v in onnx.AttributeProto.AttributeType.items()}


def _check_attributes(node: onnx.NodeProto, opsets: dict[str, int]) -> None:
    domain = node.domain or "ai.onnx"
    if domain != "ai.onnx" or domain not in opsets:
        return
    try:
        schema = onnx.defs.get_schema(node.op_type, opsets[domain], "")
    except onnx.defs.SchemaError:
        return  # an unknown op: the importer lists those
    where = f"node {node.name!r} ({node.op_type})"
    _check_inputs(node, schema, where)
    for a in node.attribute:
        spec = schema.attributes.get(a.name)
        if spec is None:
            raise NncError(f"{where}: the model is not valid ONNX (onnx checker: Unrecognized "
                           f"attribute: {a.name} for operator {node.op_type})")
        want = int(spec.type)
        if a.type != want and want != 0:  # 0: the schema leaves the type open
            raise NncError(f"{where}: attribute {a.name!r} must be "
                           f"{_ATTR_NAMES.get(want, want)}, got {_ATTR_NAMES.get(a.type, a.type)} "
                           "(onnx checker: Mismatched attribute type)")


def _check_inputs(node: onnx.NodeProto, schema: onnx.defs.OpSchema, where: str) -> None:
    """A required or variadic input given as "" (the name of an absent optional input) is
    missing: a converter would meet an input that is not there (found by fuzzing), and
    onnxruntime fails on such a Concat and crashes on such a Sum."""
    option = onnx.defs.OpSchema.FormalParameterOption
    for k, name in enumerate(node.input):
        if name or not schema.inputs:
            continue
        formal = schema.inputs[min(k, len(schema.inputs) - 1)]
        if k >= len(schema.inputs) and formal.option != option.Variadic:
            continue  # more inputs than the op has: the converter names that
        if formal.option == option.Single:
            raise NncError(f"{where}: input {k} ({formal.name}) is required but its name is empty "
                           f"(onnx checker: input {k} is marked single but has an empty string "
                           "in the graph); give it a value")
        if formal.option == option.Variadic:
            raise NncError(f"{where}: input {k} ({formal.name}, variadic) has an empty name; "
                           "variadic inputs cannot be left out: remove it")


def _repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 6; `label` before
    return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _non_utf8(msg: Any, where: str) -> str | None:
    """The path of the first text field of `msg` that is not valid UTF-8 (protobuf hands such
    a field over as bytes), string attributes included; None when all are text."""
    for field, value in msg.ListFields():
        name = f"{where}.{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if _repeated(field) else [value]
            if any(not isinstance(v, str) for v in values):
                return name
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if isinstance(msg, onnx.TensorProto):
                continue  # data, not text (its name is checked as a string field above)
            items = value if _repeated(field) else [value]
            if field.message_type.GetOptions().map_entry:
                continue
            for i, item in enumerate(items):
                label = getattr(item, "name", "") or str(i)
                bad = _non_utf8(item, f"{name}[{label!r}]" if isinstance(label, str) else name)
                if bad is not None:
                    return bad
        elif (field.type == FieldDescriptor.TYPE_BYTES and isinstance(msg, onnx.AttributeProto)
              and field.name in ("s", "strings")):
            for b in (value if _repeated(field) else [value]):
                try:
                    b.decode("utf-8")
                except UnicodeDecodeError:
                    return f"{name} (attribute {msg.name!r})"
    return None
