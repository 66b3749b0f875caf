"""Build the tirx IRModule of emit.py into `model.so`, a TVM runtime module.

The output folder holds `model_tir.py` (the IRModule as TVMScript, printed by TVM: to read),
`weights.bin`, `model.so` (tvm.compile for LLVM, this CPU, then export_library) and
`run_model.py`, a loader that needs only `tvm.runtime` and numpy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnc.errors import NncError
from nnc.ir.loops import LoopModule

LIBRARY = "model.so"
SCRIPT = "model_tir.py"
WEIGHTS = "weights.bin"
LOADER = "run_model.py"
INSTALL = "pip install nnc[tvm]"  # the optional extra with apache-tvm (pyproject.toml)
# TIR passes left out: on nnc's int8 kernels (requantize epilogues) they took 17 s of a 23 s
# build of AD and change nothing nnc's schedule did not already decide (no no-ops to remove;
# where ifs sit is the schedule's choice). The two StmtSimplify passes: on the int8 kernels'
# requantize expressions they cost 0.3-0.8 s of CPU (VWW int8 tvm.compile 4.60 -> 3.83 s, IC
# 3.0 -> 2.6, KWS 1.31 -> 1.01) and the code they leave ran as fast (VWW int8 0.460 -> 0.454
# ms, VWW fp32 0.181 -> 0.178, IC fp32 0.170 -> 0.171; README "Compile time")
SKIPPED_PASSES = ["tirx.RemoveNoOp", "s_tir.HoistIfThenElse", "s_tir.StmtSimplify",
                  "tirx.StmtSimplify"]


def require_tvm() -> Any:
    """The `tvm` package, or a user error saying how to install it."""
    try:
        import tvm
    except ImportError as e:
        raise NncError(f"the tvm target needs Apache TVM, which is not installed ({e}); "
                       f"install it with `{INSTALL}`") from None
    return tvm


def llvm_target(tvm: Any, cpu: str | None = None) -> Any:
    """LLVM for this CPU (TVM refuses "-mcpu=" strings; the dict form is the way), with
    type-based alias analysis off. TVM tags every buffer variable with its own TBAA type, and
    nnc's memory plan gives the same workspace bytes to buffers of different kernels (and
    dtypes): once LLVM inlines the kernels into `main`, TBAA lets it move a later kernel's load
    above an earlier kernel's store to the same bytes (lstm_kws int8 was up to 35 LSB off, the
    flexattention conformance cases wrong). The C backend is safe the other way: its kernels are
    `noipa`. Aliasing inside a kernel is still described by `tirx.noalias` (nnc's restrict
    analysis)."""
    return tvm.target.Target({"kind": "llvm",
                              "mcpu": cpu or tvm.target.codegen.llvm_get_system_cpu(),
                              "cl-opt": ["-enable-tbaa=0"]})


def _with_deep_stack(fn: Any) -> Any:
    """`fn()` on a thread with a 512 MB stack and a raised recursion limit: TIR's visitors (and
    TVM's printer) recurse once per nested expression / statement, and a long chain (the LSTM's
    unrolled cell) overflowed Python's limit, then the C stack inside TVM's FFI (a segfault, not
    an error); emit.py recurses over nnc's expressions the same way."""
    import sys
    import threading

    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # re-raised on the caller's thread
            result["error"] = e

    old_limit, old_size = sys.getrecursionlimit(), threading.stack_size()
    sys.setrecursionlimit(max(old_limit, 200_000))
    threading.stack_size(512 << 20)
    try:
        t = threading.Thread(target=run, name="nnc-tvm-build")
        t.start()
    finally:
        threading.stack_size(old_size)
    t.join()
    sys.setrecursionlimit(old_limit)
    if "error" in result:
        raise result["error"]
    return result["value"]


def build_tvm(files: Mapping[str, str | bytes], out: Path, module: LoopModule) -> dict[str, Any]:
    """Write `files`, build the IRModule of `module` (emit.py), print it into model_tir.py and
    build model.so; returns nnc.json's "tvm" entry with the seconds of each step."""
    from nnc.backends.c.build import write_files
    from nnc.backends.tvm.emit import emit_tvm, script_header

    tvm = require_tvm()
    write_files(files, out)
    t0 = time.perf_counter()
    program = _with_deep_stack(lambda: emit_tvm(module))
    t1 = time.perf_counter()
    script = _with_deep_stack(lambda: program.module.script())
    (out / SCRIPT).write_text(script_header(program, module.name) + script + "\n")
    t2 = time.perf_counter()
    target = llvm_target(tvm)

    def compile_module() -> Any:
        with tvm.transform.PassContext(opt_level=3, disabled_pass=SKIPPED_PASSES):
            return tvm.compile(program.module, target=target)

    lib = _with_deep_stack(compile_module)
    t3 = time.perf_counter()
    lib.export_library(str(out / LIBRARY))
    return {
        "library": LIBRARY, "weights": WEIGHTS, "entry": "main",
        "workspace_bytes": int(program.workspace_bytes),
        "weights_bytes": len(program.weights),
        "functions": program.kernels,
        "llvm_target": str(target), "tvm_version": tvm.__version__,
        "emit_s": round(t1 - t0, 4), "print_s": round(t2 - t1, 4),
        "build_s": round(t3 - t2, 4), "export_s": round(time.perf_counter() - t3, 4),
    }
