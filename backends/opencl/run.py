"""Run a built OpenCL model from Python: `OpenCLModel(out_dir)` loads `libmodel.so` with ctypes.

    >>> model = OpenCLModel("out/", device="pocl")              # doctest: +SKIP
    >>> y = model.run({"x": x})["y"]                             # doctest: +SKIP
    >>> model.benchmark(warmup=10, repeat=100)["layers"][0]      # doctest: +SKIP
    {'kernel': 'k0_conv', 'name': 'conv1', 'op': 'fused(conv,relu)', 'median_us': 12.3, ...}

The program binary is cached in `out_dir/model.clbin` (reused when the source, device and
driver are unchanged); `build_ms` and `from_cache` say what init did.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nnc.backends.c.run import (
    HostModel,
)
from nnc.backends.opencl.build import DEBIAN_PACKAGES
from nnc.errors import NncError

CACHE = "model.clbin"
# nnc_opencl.h error codes
ENOPLATFORM, ENODEVICE, EBUILD, ERESOURCES = -10, -11, -12, -14


class OpenCLUnavailable(NncError):
    """No OpenCL platform or no (matching) device on this machine."""


class KernelBuildError(NncError):
    """The device's compiler rejected model.cl: the build log, with the failing kernels named."""


class OpenCLRunError(NncError):
    """An enqueue failed on the device (out of resources, ...), with the layer named."""


def kernel_at_line(source: str, line: int) -> str | None:
    """The name of the `__kernel` whose text holds line `line` (1-based) of model.cl."""
    name = None
    for i, text in enumerate(source.splitlines(), start=1):
        if i > line:
            break
        m = re.match(r"__kernel void (\w+)\(", text)
        if m:
            name = m.group(1)
    return name


def explain_build_log(log: str, source: str) -> str:
    """The log with each error line's kernel named (`[kernel k3_conv]`)."""
    out = []
    for text in log.splitlines():
        # clang: "<file>:12:5: error: ...", PoCL: "error: <file>:12:5: ..."
        m = re.search(r":(\d+):\d+:", text) if "error" in text else None
        kernel = kernel_at_line(source, int(m.group(1))) if m else None
        out.append(f"{text}  [kernel {kernel}]" if kernel else text)
    return "\n".join(out)


class OpenCLModel(HostModel):
    """A compiled OpenCL model in `out_dir`, callable from Python. The descriptor tables,
    input checks and `run` are the C backend's (`HostModel`); init picks the device."""

    def __init__(self, out_dir: str | Path, prefix: str | None = None,
                 device: str | None = None, cache: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.device_spec = device
        self.cache = cache
        self._load(out_dir, prefix)  # one device arena: HostModel's lock serializes runs
        lib, p = self._lib, self.prefix
        self._fn("last_error", ctypes.c_char_p, [])
        self._fn("device_name", ctypes.c_char_p, [])
        configure = self._fn("configure", ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p])
        cache = str((self.out_dir / CACHE).resolve()).encode() if self.cache else None
        configure(cache, self.device_spec.encode() if self.device_spec else None)
        init = getattr(lib, f"{p}_init")
        init.restype = ctypes.c_int
        rc = init()
        if rc != 0:
            raise self._error(rc, "init")
        build_ms = self._fn("build_ms", ctypes.c_double, [ctypes.POINTER(ctypes.c_int32)])
        flag = ctypes.c_int32(0)
        self.build_ms = float(build_ms(ctypes.byref(flag)))
        self.from_cache = bool(flag.value)
        self.device_name = self._text_fn("device_name")
        bench = self._fn("bench", ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32,
                                                  ctypes.c_int32, ctypes.c_void_p,
                                                  ctypes.c_void_p])
        self._bench = bench

    def close(self) -> None:
        """Release the device objects (the library stays loaded)."""
        getattr(self._lib, f"{self.prefix}_release")()

    def _fn(self, name: str, restype: Any, argtypes: list[Any]) -> Any:
        fn = getattr(self._lib, f"{self.prefix}_{name}")
        fn.restype, fn.argtypes = restype, argtypes
        return fn

    def _text_fn(self, name: str) -> str:
        raw = getattr(self._lib, f"{self.prefix}_{name}")()
        return raw.decode("utf-8", "replace") if raw else ""

    def _error(self, rc: int, what: str) -> Exception:
        message = self._text_fn("last_error")
        if rc == ENOPLATFORM:
            return OpenCLUnavailable(f"{message}: install an OpenCL driver and loader (Debian: "
                                     f"apt-get install {DEBIAN_PACKAGES})")
        if rc == ENODEVICE:
            return OpenCLUnavailable(message)
        if rc == EBUILD:
            head, _, log = message.partition("\n")
            source = (self.out_dir / "model.cl").read_text()
            return KernelBuildError(f"{head}\n{explain_build_log(log, source)}\n(model.cl in "
                                    f"{self.out_dir}; nnc generated it for OpenCL 1.2: a "
                                    "device that has no fp64/required features cannot run "
                                    "it, otherwise this is an nnc bug)")
        if rc == ERESOURCES:
            return OpenCLRunError(message)
        return RuntimeError(f"{self.prefix}_{what}() failed with code {rc}: {message}")

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        try:
            return super().run(inputs)
        except RuntimeError as e:
            m = re.search(r"failed with code (-?\d+)", str(e))
            if m is None:
                raise
            raise self._error(int(m.group(1)), "run") from None

    __call__ = run

    def benchmark(self, warmup: int = 10, repeat: int = 100,  # type: ignore[override]
                  inputs: Mapping[str, Any] | None = None, seed: int | None = None,
                  timeout: float | None = None) -> dict[str, Any]:
        """`repeat` timed runs in C: whole-run wall time (inputs written, kernels, outputs read)
        and, per kernel, from OpenCL profiling events, queued->end (`queued_end_us`: includes
        waiting behind the kernels before it) and start->end (`median_us`, `min_us`)."""
        if inputs is None:
            rng = np.random.default_rng(seed or 0)
            inputs = {t.name: (rng.standard_normal(t.shape) if t.dtype.startswith("float")
                               else rng.integers(0, 10, t.shape)).astype(t.dtype)
                      for t in self.inputs}
        arrays = self._check_inputs(inputs)
        outs = [np.empty(t.shape, dtype=t.dtype) for t in self.outputs]
        in_ptrs = (ctypes.c_void_p * max(len(arrays), 1))(*[a.ctypes.data for a in arrays])
        out_ptrs = (ctypes.c_void_p * max(len(outs), 1))(*[a.ctypes.data for a in outs])
        repeat = max(int(repeat), 1)
        wall = np.zeros(repeat, dtype=np.float64)
        kns = np.zeros((repeat, max(len(self.layers), 1), 2), dtype=np.uint64)
        with self._lock:
            rc = self._bench(in_ptrs, out_ptrs, int(warmup), repeat, wall.ctypes.data,
                             kns.ctypes.data)
        if rc != 0:
            raise self._error(rc, "bench")
        layers = []
        for i, lay in enumerate(self.layers):
            queued = kns[:, i, 0].astype(np.float64) / 1e3
            run = kns[:, i, 1].astype(np.float64) / 1e3
            layers.append({"kernel": lay.name, "name": lay.op_name, "op": lay.op_kind,
                           "macs": lay.macs, "queued_end_us": round(float(np.median(queued)), 3),
                           "median_us": round(float(np.median(run)), 3),
                           "min_us": round(float(run.min()), 3)})
        kernel_sum = float(np.median(kns[:, :len(self.layers), 1].sum(axis=1))) / 1e6
        return {
            "latency_ms": {"median": float(np.median(wall)), "min": float(wall.min()),
                           "max": float(wall.max()), "mean": float(wall.mean())},
            "kernels_ms": round(kernel_sum, 4), "layers": layers, "warmup": int(warmup),
            "repeat": repeat, "device": self.device_name, "arena_bytes": self.arena_size,
            "build_ms": round(self.build_ms, 2), "binary_from_cache": self.from_cache,
        }
