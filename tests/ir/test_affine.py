"""ir/affine.py: affine forms of index expressions, flat offsets, injectivity."""

from __future__ import annotations

from nnc.ir.affine import affine_form, flat_offset, injective
from nnc.ir.loops import INDEX, Var, const


def _i(v: int):
    return const(v, INDEX)


def test_affine_form_of_sums_and_products():
    i, j = Var("i"), Var("j")
    ext = {"i": 4, "j": 12}
    assert affine_form(i * _i(12) + j - _i(1), ext) == {"i": 12, "j": 1, "": -1}
    assert affine_form(_i(3) * (i + _i(2)), ext) == {"i": 3, "": 6}
    assert affine_form(i * j, ext) is None  # a product of two variables
    assert affine_form(i / _i(2), ext) is None  # division is not affine here
    assert affine_form(Var("k"), ext) is None  # not a loop of this nest


def test_extent_one_loops_drop_out():
    i, z = Var("i"), Var("z")
    assert affine_form(i + z, {"i": 5, "z": 1}) == {"i": 1}


def test_flat_offset_and_injective():
    n, c = Var("n"), Var("c")
    ext = {"n": 3, "c": 8}
    form = flat_offset((n, c), (3, 8), ext)
    assert form == {"n": 8, "c": 1}
    assert injective(form, ["n", "c"], ext)
    # a transposed read of a [8, 3] buffer is also one-to-one; a broadcast (c missing) is not
    assert injective(flat_offset((c, n), (8, 3), ext), ["n", "c"], ext)
    assert not injective(flat_offset((n, _i(0)), (3, 8), ext), ["n", "c"], ext)
    # overlapping strides: offsets n + c with c in [0, 8) repeat
    assert not injective({"n": 1, "c": 1}, ["n", "c"], ext)


def test_map_expr_and_walk_expr():
    from nnc.ir.loops import Binary, Load, map_expr, walk_expr

    i, j = Var("i"), Var("j")
    e = Load("x", (i * _i(2) + j,), "float32")
    swapped = map_expr(e, lambda x: {"i": j, "j": i}.get(x.name) if isinstance(x, Var) else None)
    assert swapped == Load("x", (j * _i(2) + i,), "float32")
    names = [x.name for x in walk_expr(e) if isinstance(x, Var)]
    assert names == ["i", "j"]  # pre-order, left to right
    assert sum(isinstance(x, Binary) for x in walk_expr(e)) == 2
