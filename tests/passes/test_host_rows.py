"""The shared pieces of the host row passes (`passes/_host_rows.py`): the epilogue chain walk,
the chain copies on new values and the splice of the graph's op list."""

from __future__ import annotations

from functools import partial

from nnc.ir.graph import Attrs, Op, Value
from nnc.ir.types import TensorType
from nnc.ir.verify import verify_graph
from nnc.passes._host_rows import (
    Splice,
    chain_end,
    epilogue_chain,
    rebuild_chain,
    with_row_width,
)
from tests.passes.test_flatten_pointwise import pw_graph


def test_epilogue_chain_stops_at_row_varying_constant() -> None:
    g = pw_graph(tail=("relu", "mul_c", "mul_row"))
    conv = g.ops[0]
    chain = epilogue_chain(conv, g, g.constant_map())
    assert [o.outputs[0].name for o in chain] == ["y1", "y2"]  # y3 multiplies by a [w] row
    assert chain_end(conv, chain).name == "y2"
    assert chain_end(conv, []).name == "y0"
    everything = epilogue_chain(conv, g, g.constant_map(), lambda shape: True)
    assert [o.outputs[0].name for o in everything] == ["y1", "y2", "y3", "out"]


def test_rebuild_chain_renames_and_retypes() -> None:
    g = pw_graph(tail=("relu",))
    conv, relu = g.ops[0], g.ops[1]
    used = set(g.value_types()) | {"y0_w"}
    copies = rebuild_chain(conv, [relu], suffix="_w", used=used,
                           out_type=partial(with_row_width, width=8), first_input="xp",
                           first_attrs=conv.attrs.set(group=1))
    assert [c.outputs[0].name for c in copies] == ["y0_w_1", "y1_w"]  # fresh names
    assert {"y0_w_1", "y1_w"} <= used
    assert copies[0].inputs == ("xp", "w", "b") and copies[1].inputs == ("y0_w_1",)
    assert copies[0].attrs == conv.attrs.set(group=1) and copies[1].attrs == relu.attrs
    assert all(c.outputs[0].type.shape == (1, 6, 25, 8) for c in copies)


def test_splice_replaces_first_and_drops_the_rest() -> None:
    g = pw_graph(tail=("relu",))
    conv, relu, sig = g.ops
    splice = Splice()
    assert splice.apply(g) is g  # nothing replaced: the same graph
    copies = rebuild_chain(conv, [relu], suffix="_c", used=set(g.value_types()),
                           out_type=lambda t: t)
    back = Op("reshape", (copies[-1].outputs[0].name,), (relu.outputs[0],),
              Attrs.of(shape=relu.outputs[0].type.shape))
    splice.replace([conv, relu], [*copies, back])
    assert conv in splice and relu in splice and sig not in splice
    out = splice.apply(g)
    verify_graph(out)
    assert [o.kind for o in out.ops] == ["conv", "relu", "reshape", "sigmoid"]
    assert out.ops[2].outputs[0] == Value("y1", TensorType((1, 6, 25, 5), "float32"))
