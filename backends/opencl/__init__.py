"""The OpenCL backend: kernels from the loop IR (emit.py), a C host runtime (runtime_c/opencl),
the project build (build.py) and a ctypes runner (run.py)."""
