"""plan-memory: lifetimes, strategies, in-place reuse, and a randomized no-overlap check."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from nnc.backends.c.emit import emit_c
from nnc.ir.graph import Attrs, Constant, Graph, Op, Value
from nnc.ir.interp import run_graph
from nnc.ir.loop_interp import run_loop_module
from nnc.ir.loop_verify import verify_loop_module
from nnc.ir.loops import (
    Buffer,
    Kernel,
    KernelBuilder,
    LoopModule,
    OverlapTail,
    Split,
    maximum,
)
from nnc.ir.ops import get_op
from nnc.ir.types import TensorType
from nnc.passes.manager import PassContext, PassManager
from nnc.passes.plan_memory import (
    STRATEGIES,
    PlanMemoryOptions,
    arena_bytes,
    floor_bytes,
    lifetimes,
    plan_memory,
)


def plan(m: LoopModule, **opts: int) -> tuple[LoopModule, dict]:
    ctx = PassContext(PlanMemoryOptions(**opts))
    out = plan_memory(m, ctx)
    verify_loop_module(out)
    return out, ctx.facts["memory"]


def live_ranges(m: LoopModule) -> dict[str, tuple[int, int]]:
    """Lifetime of each buffer's storage root, recomputed independently of the pass."""
    bmap = m.buffer_map()

    def root(name: str) -> str:
        while bmap[name].alias:
            name = bmap[name].alias  # type: ignore[assignment]
        return name

    spans: dict[str, tuple[int, int]] = {}
    for t, k in enumerate(m.kernels):
        for p in k.params:
            r = root(p)
            spans[r] = (spans.get(r, (t, t))[0], t)
    return spans


def assert_valid_plan(m: LoopModule, facts: dict, alignment: int = 16) -> None:
    spans = live_ranges(m)
    bmap = m.buffer_map()
    # an applied in-place pair: the input's root dies at the kernel where the output is born
    handoffs = set()
    for x, y in facts.get("inplace", []):
        rx = x
        while bmap[rx].alias:
            rx = bmap[rx].alias
        assert spans[rx][1] == spans[y][0], f"in-place {x}->{y}: {rx} outlives the handoff"
        assert bmap[rx].nbytes == bmap[y].nbytes
        handoffs.add(frozenset((rx, y)))
    arena = [b for b in m.buffers if b.scope == "arena" and not b.alias]
    for b in arena:
        assert b.offset is not None and b.offset % alignment == 0
        assert b.offset + b.nbytes <= m.arena_size
    for i, a in enumerate(arena):
        for b in arena[i + 1:]:
            if a.name not in spans or b.name not in spans:
                continue
            (fa, la), (fb, lb) = spans[a.name], spans[b.name]
            if frozenset((a.name, b.name)) in handoffs:
                assert a.offset == b.offset
                continue
            if fa <= lb and fb <= la:  # live at the same time: memory must be disjoint
                assert (a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset), (
                    f"{a.name}@{a.offset}+{a.nbytes} overlaps {b.name}@{b.offset}+{b.nbytes}")
    assert facts["arena_bytes"] == m.arena_size >= facts["floor_bytes"]
    assert facts["strategy"] in STRATEGIES
    for b in m.buffers:
        if b.alias:
            assert b.offset is None


def copy_kernel(name: str, src: Buffer, dst: Buffer, extra: Buffer | None = None) -> Kernel:
    """dst = src + 1 (+ extra), elementwise over dst's shape (all rank 1 here)."""
    b = KernelBuilder(name)
    with b.loop(dst.shape[0]) as i:
        v = src[i] + 1.0
        if extra is not None:
            v = v + extra[i]
        b.store(dst, (i,), v)
    params = (src.name, dst.name) + ((extra.name,) if extra is not None else ())
    return b.build(params)


def chain_module() -> LoopModule:
    """x → t0 → t1 → t2 → y, where the last kernel also reads t0 (a skip connection)."""
    n = 5
    x, y = Buffer("x", (n,), "float32", "input"), Buffer("y", (n,), "float32", "output")
    t = [Buffer(f"t{i}", (n,), "float32", "arena") for i in range(3)]
    kernels = (
        copy_kernel("k0", x, t[0]), copy_kernel("k1", t[0], t[1]),
        copy_kernel("k2", t[1], t[2]), copy_kernel("k3", t[2], y, extra=t[0]),
    )
    return LoopModule("m", (x, y, *t), kernels, ("x",), ("y",))


def test_chain_with_skip_connection() -> None:
    before = chain_module()
    after, facts = plan(before)
    assert_valid_plan(after, facts)
    # t0 lives through all kernels and k2 reads t1 while writing t2: three 32-byte slots
    assert {k: facts[k] for k in ("arena_bytes", "floor_bytes", "strategy", "inplace")} == {
        "arena_bytes": 96, "floor_bytes": 96, "strategy": "greedy-by-size", "inplace": []}
    assert facts["largest_tensors"] == [("t0", 20), ("t1", 20), ("t2", 20)]
    assert facts["peak"] == {"kernel": "k2", "tensors": [("t0", 32), ("t1", 32), ("t2", 32)]}
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(run_loop_module(after, {"x": x})["y"], x + 4 + x + 1)
    assert before.arena_size == 0 and all(b.offset is None for b in before.buffers)


def test_buffers_reuse_memory_after_death() -> None:
    n = 4
    x, y = Buffer("x", (n,), "float32", "input"), Buffer("y", (n,), "float32", "output")
    t = [Buffer(f"t{i}", (n,), "float32", "arena") for i in range(4)]
    chain = [x, *t, y]
    kernels = tuple(copy_kernel(f"k{i}", chain[i], chain[i + 1]) for i in range(5))
    after, facts = plan(LoopModule("m", (x, y, *t), kernels, ("x",), ("y",)))
    assert_valid_plan(after, facts)
    assert facts["arena_bytes"] == facts["floor_bytes"] == 32  # two ping-pong slots
    xs = np.ones(n, np.float32)
    np.testing.assert_array_equal(run_loop_module(after, {"x": xs})["y"], xs + 5)


def test_alias_extends_target_lifetime_and_has_no_offset() -> None:
    x, y = Buffer("x", (4,), "float32", "input"), Buffer("y", (4,), "float32", "output")
    t0 = Buffer("t0", (4,), "float32", "arena")
    view = Buffer("v", (2, 2), "float32", "arena", alias="t0")
    t1 = Buffer("t1", (4,), "float32", "arena")
    t2 = Buffer("t2", (4,), "float32", "arena")
    b = KernelBuilder("k3")
    with b.loops((2, 2)) as (i, j):
        b.store(y, (i * 2 + j,), view[i, j] + t2[i * 2 + j])
    kernels = (copy_kernel("k0", x, t0), copy_kernel("k1", x, t1), copy_kernel("k2", t1, t2),
               b.build(("v", "t2", "y")))
    m = LoopModule("m", (x, y, t0, view, t1, t2), kernels, ("x",), ("y",))
    after, facts = plan(m)
    assert_valid_plan(after, facts)
    blocks = {blk.name: (blk.first, blk.last) for blk in lifetimes(m, 16)}
    assert blocks == {"t0": (0, 3), "t1": (1, 2), "t2": (2, 3)}
    xs = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(run_loop_module(after, {"x": xs})["y"], xs + 1 + xs + 2)


def test_alignment_option_and_odd_sizes() -> None:
    x = Buffer("x", (3,), "int8", "input")
    y = Buffer("y", (3,), "int8", "output")
    t0, t1 = Buffer("t0", (3,), "int8", "arena"), Buffer("t1", (3,), "int8", "arena")
    b0, b1, b2 = (KernelBuilder(f"k{i}") for i in range(3))
    for bld, src, dst in ((b0, x, t0), (b1, t0, t1), (b2, t1, y)):
        with bld.loop(3) as i:
            bld.store(dst, (i,), src[i])
    m = LoopModule("m", (x, y, t0, t1), (b0.build(("x", "t0")), b1.build(("t0", "t1")),
                                         b2.build(("t1", "y"))), ("x",), ("y",))
    after, facts = plan(m, alignment=64)
    assert_valid_plan(after, facts, alignment=64)
    assert facts["arena_bytes"] == 128
    assert plan(m)[1]["arena_bytes"] == 32


def test_unused_arena_buffer_gets_a_place() -> None:
    m = chain_module()
    extra = Buffer("unused", (7,), "float32", "arena")
    after, facts = plan(m.replace(buffers=m.buffers + (extra,)))
    assert after.buffer_map()["unused"].offset == 0
    assert_valid_plan(after, facts)


def test_no_arena_buffers() -> None:
    x, y = Buffer("x", (2,), "float32", "input"), Buffer("y", (2,), "float32", "output")
    m = LoopModule("m", (x, y), (copy_kernel("k", x, y),), ("x",), ("y",))
    after, facts = plan(m)
    assert after.arena_size == 0 and facts["arena_bytes"] == facts["floor_bytes"] == 0


def test_alias_cycle_is_an_error() -> None:
    a = Buffer("a", (2,), "float32", "arena", alias="b")
    b = Buffer("b", (2,), "float32", "arena", alias="a")
    k = Kernel("k", ("a",), (), ())
    with pytest.raises(ValueError, match="alias cycle"):
        plan_memory(LoopModule("m", (a, b), (k,), (), ()), PassContext())


def random_module(seed: int) -> LoopModule:
    """Random buffers (some aliases) used by random kernels claiming random in-place pairs."""
    rng = np.random.default_rng(seed)
    dtypes = ["float32", "int8", "float64", "int16"]
    # few distinct sizes, so that claimed in-place pairs often have equal sizes
    bufs = [Buffer(f"b{i}", (int(rng.choice([8, 64, 100])),), str(rng.choice(dtypes)), "arena")
            for i in range(int(rng.integers(2, 14)))]
    # some aliases of earlier buffers (same bytes, another shape)
    for i in range(int(rng.integers(0, 3))):
        target = bufs[int(rng.integers(0, len(bufs)))]
        bufs.append(Buffer(f"v{i}", (target.nbytes,), "uint8", "arena", alias=target.name))
    names = [b.name for b in bufs]
    kernels = []
    for t in range(int(rng.integers(1, 10))):
        params = tuple(dict.fromkeys(str(n) for n in
                                     rng.choice(names, size=int(rng.integers(1, 4)))))
        # the planner must apply only the pairs that are safe
        pairs = tuple((params[0], p) for p in params[1:] if rng.random() < 0.7)
        kernels.append(Kernel(f"k{t}", params, (), (), inplace=pairs))
    return LoopModule("m", tuple(bufs), tuple(kernels), (), ())


@pytest.mark.parametrize("seed", range(25))
def test_randomized_plans_never_overlap_live_buffers(seed: int) -> None:
    m = random_module(seed)
    after, facts = plan(m)
    assert_valid_plan(after, facts)
    # every strategy alone is valid too, and the pass kept the smallest
    blocks = lifetimes(m, 16)
    sizes = {name: arena_bytes(blocks, s(blocks)) for name, s in STRATEGIES.items()}
    assert facts["arena_bytes"] == min(sizes.values()) >= floor_bytes(blocks)
    for name, strategy in STRATEGIES.items():
        placed = strategy(blocks)
        offsets = {m: placed[blk.name] for blk in blocks for m in blk.members}
        alone = after.replace(arena_size=sizes[name], buffers=tuple(
            replace(b, offset=offsets[b.name]) if b.name in offsets else b for b in after.buffers))
        assert_valid_plan(alone, {**facts, "arena_bytes": sizes[name]})


def test_randomized_inplace_pairs_are_valid() -> None:
    applied = 0
    for seed in range(300):
        after, facts = plan(random_module(seed))
        assert_valid_plan(after, facts)
        applied += len(facts["inplace"])
    assert applied >= 10  # the claims that are safe do get applied


def test_pipeline_records_facts() -> None:
    pm = PassManager("plan-memory{alignment=32}")
    after = pm.run(chain_module())
    assert pm.facts["memory"]["arena_bytes"] == after.arena_size == 96
    assert all(b.offset % 32 == 0 for b in after.buffers if b.scope == "arena")



# ---------------------------------------------------------------- in-place reuse


def relu_chain(skip: bool = False) -> LoopModule:
    """x → t0 → relu → t1 → y; kernel 1 may write t1 over t0. With `skip`, y also reads t0."""
    n = 6
    x, y = Buffer("x", (n,), "float32", "input"), Buffer("y", (n,), "float32", "output")
    t0, t1 = Buffer("t0", (n,), "float32", "arena"), Buffer("t1", (n,), "float32", "arena")
    b = KernelBuilder("k1")
    with b.loop(n) as i:
        b.store(t1, (i,), maximum(t0[i], 0.0))
    relu = b.build(("t0", "t1"), inplace=(("t0", "t1"),))
    last = copy_kernel("k2", t1, y, extra=t0 if skip else None)
    return LoopModule("m", (x, y, t0, t1), (copy_kernel("k0", x, t0), relu, last), ("x",), ("y",))


def test_inplace_output_takes_the_dying_input_slot() -> None:
    after, facts = plan(relu_chain())
    assert_valid_plan(after, facts)
    bm = after.buffer_map()
    assert bm["t0"].offset == bm["t1"].offset == 0
    assert facts["inplace"] == [("t0", "t1")]
    assert facts["arena_bytes"] == facts["floor_bytes"] == 32  # one slot instead of two
    assert facts["peak"]["tensors"] == [("t0=t1", 32)]
    xs = np.array([-2, -1, 0, 1, 2, 3], np.float32)
    np.testing.assert_array_equal(run_loop_module(after, {"x": xs})["y"],
                                  np.maximum(xs + 1, 0) + 1)


def test_inplace_skipped_when_input_lives_on_or_option_off() -> None:
    for m, opts in ((relu_chain(skip=True), {}), (relu_chain(), {"inplace": False})):
        after, facts = plan(m, **opts)
        assert_valid_plan(after, facts)
        assert facts["inplace"] == [] and facts["arena_bytes"] == 64
        bm = after.buffer_map()
        assert bm["t0"].offset != bm["t1"].offset


def test_inplace_skipped_for_a_kernel_with_an_overlapped_tail() -> None:
    # an overlapped tile computes some outputs again, reading inputs they may have overwritten
    m = relu_chain()
    relu = m.kernels[1].replace(schedule=(Split("i0", 4), OverlapTail("i0_o")))
    after, facts = plan(m.replace(kernels=(m.kernels[0], relu, m.kernels[2])))
    assert_valid_plan(after, facts)
    assert facts["inplace"] == [] and facts["arena_bytes"] == 64


def test_inplace_pair_must_name_params() -> None:
    m = relu_chain()
    bad = m.kernels[1].replace(inplace=(("t0", "y"),))
    with pytest.raises(ValueError, match="not one of its params"):
        plan_memory(m.replace(kernels=(m.kernels[0], bad, m.kernels[2])), PassContext())


CONV = {"strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1), "group": 1}


def residual_graph() -> Graph:
    """After fuse-ops: c1 = conv(x); s = relu(conv(x) + c1); u = conv(s); e = exp(s);
    w = conv(e) + u; y = conv(w)."""
    rng = np.random.default_rng(0)
    consts = {f"w{i}": 0.2 * rng.standard_normal((4, 4, 3, 3)) for i in range(4)}
    consts["cb"] = rng.standard_normal(4)
    types = {"x": TensorType((1, 4, 5, 5), "float32")}
    constants = tuple(Constant.of(n, a.astype(np.float32)) for n, a in consts.items())
    types.update({c.name: c.value.type for c in constants})
    spec = [("conv", ("x", "w0", "cb"), CONV, "c1"), ("conv", ("x", "w1", "cb"), CONV, "c2"),
            ("add", ("c2", "c1"), {}, "a"), ("relu", ("a",), {}, "s"),
            ("conv", ("s", "w2", "cb"), CONV, "u"), ("exp", ("s",), {}, "e"),
            ("conv", ("e", "w3", "cb"), CONV, "v"), ("add", ("v", "u"), {}, "w"),
            ("conv", ("w", "w0", "cb"), CONV, "y")]
    ops = []
    for kind, ins, attrs, out in spec:
        t = get_op(kind).infer([types[n] for n in ins], Attrs.of(attrs))[0]
        types[out] = t
        ops.append(Op(kind, ins, (Value(out, t),), Attrs.of(attrs), name=out))
    return Graph("g", (Value("x", types["x"]),), (Value("y", types["y"]),), constants,
                 tuple(ops))


def test_lowering_marks_only_safe_inplace_pairs() -> None:
    m = PassManager("fuse-ops,lower-to-loops").run(residual_graph())
    # fuse-ops anchors each add on its first conv and moves the group to the add's place
    # the convs' weights are repacked channels-last (`_conv_pack`): param 1 is the packed copy
    assert all("packed1" in k.params[1] for k in m.kernels if k.op_kind.startswith("conv"))
    assert [(k.op_kind, k.params[:1] + k.params[2:] if k.op_kind.startswith("conv") else k.params,
             k.inplace) for k in m.kernels] == [
        ("conv", ("x", "cb", "c2"), ()),  # a conv reads other elements than it writes
        ("conv+add+relu", ("x", "cb", "c2", "s"), (("c2", "s"),)),  # c2: epilogue only
        ("exp", ("s", "e"), (("s", "e"),)),  # elementwise
        ("conv", ("e", "cb", "v"), ()),
        ("conv+add", ("s", "cb", "v", "w"), (("v", "w"),)),  # s, the conv's input: no
        ("conv", ("w", "cb", "y"), ()),  # y is a graph output, never in the arena
    ]


def test_inplace_plan_matches_the_graph_numerically() -> None:
    g = residual_graph()
    pm = PassManager("fuse-ops,lower-to-loops,default-schedule,schedule,plan-memory")
    after = pm.run(g)
    facts = pm.facts["memory"]
    assert_valid_plan(after, facts)
    # s is read again after exp, so exp may not overwrite it
    assert facts["inplace"] == [("c2", "s"), ("v", "w")]
    bm = after.buffer_map()
    assert bm["c2"].offset == bm["s"].offset != bm["e"].offset
    assert bm["v"].offset == bm["w"].offset
    xs = np.random.default_rng(1).standard_normal((1, 4, 5, 5)).astype(np.float32)
    want = run_graph(g, {"x": xs})["y"]
    np.testing.assert_allclose(run_loop_module(after, {"x": xs})["y"], want, rtol=1e-5,
                               atol=1e-5)


def test_emitted_c_drops_restrict_on_shared_bytes() -> None:
    after = PassManager("plan-memory").run(relu_chain())
    c = str(emit_c(after)["model.c"])
    sig = next(line for line in c.splitlines() if "k1(" in line and line.startswith("static"))
    assert "restrict" not in sig, sig


# ---------------------------------------------------------------- the bar


@pytest.mark.parametrize("name", ["kws", "vww", "ic", "ad"])
def test_mlperf_tiny_arena_within_5_percent_of_floor(name: str) -> None:
    from benchmarks.memory_plan import measure
    from benchmarks.models import MODELS

    r = measure(name, MODELS[name]())
    print(f"{name}: arena {r['after_arena']:,} B, floor {r['after_floor']:,} B "
          f"(before: {r['before_arena']:,} / {r['before_floor']:,})")
    assert r["after_arena"] <= 1.05 * r["after_floor"]
    assert r["after_arena"] <= r["before_arena"]
    if name == "ic":  # the residual adds write over their dying skip tensors
        assert r["after_arena"] == 131072 < r["before_arena"] == 196608
