"""The TVM backend: nnc's scheduled loop IR as Apache TVM `tirx` PrimFuncs (emit.py), built by
TVM's LLVM code generator into a TVM runtime module, model.so (build.py), run with the TVM
runtime (run.py). Needs `pip install nnc[tvm]` (apache-tvm)."""
