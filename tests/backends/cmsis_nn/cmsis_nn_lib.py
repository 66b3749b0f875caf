"""ctypes bindings to the portable CMSIS-NN subset (runtime_c/cmsis_nn) built as a host library.

`build_library(out_dir)` compiles every source with the host C compiler (C99, -Wall -Wextra
-Werror) into a shared library; `CmsisNN(path)` calls its functions on numpy arrays."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from ctypes import POINTER, Structure, c_int, c_int8, c_int32, c_void_p
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[3]
CMSIS_NN_DIR = ROOT / "runtime_c" / "cmsis_nn"
SOURCES = sorted((CMSIS_NN_DIR / "Source").glob("*/*.c"))
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]

Pair = tuple[int, int]
I8 = npt.NDArray[np.int8]


class Dims(Structure):
    _fields_ = [("n", c_int32), ("h", c_int32), ("w", c_int32), ("c", c_int32)]


class Tile(Structure):
    _fields_ = [("w", c_int32), ("h", c_int32)]


class Activation(Structure):
    _fields_ = [("min", c_int32), ("max", c_int32)]


class Context(Structure):
    _fields_ = [("buf", c_void_p), ("size", c_int32)]


class ConvParams(Structure):
    _fields_ = [("input_offset", c_int32), ("output_offset", c_int32), ("stride", Tile),
                ("padding", Tile), ("dilation", Tile), ("activation", Activation)]


class DwConvParams(Structure):
    _fields_ = [("input_offset", c_int32), ("output_offset", c_int32), ("ch_mult", c_int32),
                ("stride", Tile), ("padding", Tile), ("dilation", Tile),
                ("activation", Activation)]


class PoolParams(Structure):
    _fields_ = [("stride", Tile), ("padding", Tile), ("activation", Activation)]


class FcParams(Structure):
    _fields_ = [("input_offset", c_int32), ("filter_offset", c_int32),
                ("output_offset", c_int32), ("activation", Activation)]


class PerChannelQuant(Structure):
    _fields_ = [("multiplier", POINTER(c_int32)), ("shift", POINTER(c_int32))]


class PerTensorQuant(Structure):
    _fields_ = [("multiplier", c_int32), ("shift", c_int32)]


def build_library(out_dir: Path) -> Path:
    """Compile runtime_c/cmsis_nn into out_dir/libcmsisnn.so with the host gcc/cc."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no host C compiler (gcc or cc) on PATH")
    lib = out_dir / "libcmsisnn.so"
    cmd = [cc, *WARNINGS, "-O2", "-fPIC", "-shared", f"-I{CMSIS_NN_DIR / 'Include'}",
           *map(str, SOURCES), "-o", str(lib)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building the CMSIS-NN subset failed:\n{r.stderr}")
    return lib


def _i8(a: npt.ArrayLike) -> I8:
    return np.ascontiguousarray(a, dtype=np.int8)


def _i32(a: npt.ArrayLike) -> npt.NDArray[np.int32]:
    return np.ascontiguousarray(a, dtype=np.int32)


def _ptr(a: np.ndarray, ctype: type) -> ctypes._Pointer:
    return a.ctypes.data_as(POINTER(ctype))


def _tile(p: Pair) -> Tile:
    """(h, w) -> cmsis_nn_tile, which stores w first."""
    return Tile(w=p[1], h=p[0])


def _dims(shape: tuple[int, ...]) -> Dims:
    n, h, w, c = (1,) * (4 - len(shape)) + tuple(shape)
    return Dims(n, h, w, c)


class CmsisNN:
    """The library's s8 functions on numpy arrays; each returns (status, output)."""

    def __init__(self, path: Path) -> None:
        self.lib = ctypes.CDLL(str(path))
        for name in ("arm_convolve_wrapper_s8", "arm_depthwise_conv_wrapper_s8",
                     "arm_fully_connected_s8", "arm_fully_connected_per_channel_s8",
                     "arm_max_pool_s8", "arm_avgpool_s8", "arm_elementwise_add_s8",
                     "arm_elementwise_mul_s8", "arm_vector_sum_s8"):
            getattr(self.lib, name).restype = c_int
        self.lib.arm_softmax_s8.restype = None

    def getter(self, name: str, *args: object) -> int:
        fn = getattr(self.lib, name)
        fn.restype = c_int32
        return int(fn(*[ctypes.byref(a) if isinstance(a, Structure) else a for a in args]))

    def conv(self, x: npt.ArrayLike, w: npt.ArrayLike, bias: npt.ArrayLike | None, *,
             input_offset: int, output_offset: int, multiplier: npt.ArrayLike,
             shift: npt.ArrayLike, stride: Pair, pad: Pair, dilation: Pair, out_hw: Pair,
             act: Pair = (-128, 127)) -> tuple[int, I8]:
        xa, wa = _i8(x), _i8(w)
        ba = None if bias is None else _i32(bias)
        m, s = _i32(multiplier), _i32(shift)
        out = np.zeros((xa.shape[0], *out_hw, wa.shape[0]), dtype=np.int8)
        params = ConvParams(input_offset, output_offset, _tile(stride), _tile(pad),
                            _tile(dilation), Activation(*act))
        quant = PerChannelQuant(_ptr(m, c_int32), _ptr(s, c_int32))
        status = self.lib.arm_convolve_wrapper_s8(
            ctypes.byref(Context(None, 0)), ctypes.byref(params), ctypes.byref(quant),
            ctypes.byref(_dims(xa.shape)), _ptr(xa, c_int8), ctypes.byref(_dims(wa.shape)),
            _ptr(wa, c_int8), ctypes.byref(Dims(1, 1, 1, wa.shape[0])),
            None if ba is None else _ptr(ba, c_int32), ctypes.byref(_dims(out.shape)),
            _ptr(out, c_int8))
        return status, out

    def depthwise(self, x: npt.ArrayLike, w: npt.ArrayLike, bias: npt.ArrayLike | None, *,
                  input_offset: int, output_offset: int, multiplier: npt.ArrayLike,
                  shift: npt.ArrayLike, ch_mult: int, stride: Pair, pad: Pair, dilation: Pair,
                  out_hw: Pair, act: Pair = (-128, 127)) -> tuple[int, I8]:
        xa, wa = _i8(x), _i8(w)
        ba = None if bias is None else _i32(bias)
        m, s = _i32(multiplier), _i32(shift)
        out = np.zeros((xa.shape[0], *out_hw, wa.shape[3]), dtype=np.int8)
        params = DwConvParams(input_offset, output_offset, ch_mult, _tile(stride), _tile(pad),
                              _tile(dilation), Activation(*act))
        quant = PerChannelQuant(_ptr(m, c_int32), _ptr(s, c_int32))
        status = self.lib.arm_depthwise_conv_wrapper_s8(
            ctypes.byref(Context(None, 0)), ctypes.byref(params), ctypes.byref(quant),
            ctypes.byref(_dims(xa.shape)), _ptr(xa, c_int8), ctypes.byref(_dims(wa.shape)),
            _ptr(wa, c_int8), ctypes.byref(Dims(1, 1, 1, wa.shape[3])),
            None if ba is None else _ptr(ba, c_int32), ctypes.byref(_dims(out.shape)),
            _ptr(out, c_int8))
        return status, out

    def fully_connected(self, x: npt.ArrayLike, w: npt.ArrayLike, bias: npt.ArrayLike | None, *,
                        input_offset: int, filter_offset: int, output_offset: int,
                        multiplier: npt.ArrayLike, shift: npt.ArrayLike,
                        act: Pair = (-128, 127)) -> tuple[int, I8]:
        """Per-channel when multiplier is an array, else per-tensor."""
        xa, wa = _i8(x), _i8(w)
        ba = None if bias is None else _i32(bias)
        c_out, depth = wa.shape
        out = np.zeros((xa.shape[0], c_out), dtype=np.int8)
        params = FcParams(input_offset, filter_offset, output_offset, Activation(*act))
        args = (ctypes.byref(Dims(xa.shape[0], 1, 1, depth)), _ptr(xa, c_int8),
                ctypes.byref(Dims(depth, 1, 1, c_out)), _ptr(wa, c_int8),
                ctypes.byref(Dims(1, 1, 1, c_out)), None if ba is None else _ptr(ba, c_int32),
                ctypes.byref(Dims(xa.shape[0], 1, 1, c_out)), _ptr(out, c_int8))
        ctx = ctypes.byref(Context(None, 0))
        if np.ndim(multiplier) == 0:
            quant_t = PerTensorQuant(int(multiplier), int(shift))
            status = self.lib.arm_fully_connected_s8(ctx, ctypes.byref(params),
                                                     ctypes.byref(quant_t), *args)
        else:
            m, s = _i32(multiplier), _i32(shift)
            quant_c = PerChannelQuant(_ptr(m, c_int32), _ptr(s, c_int32))
            status = self.lib.arm_fully_connected_per_channel_s8(ctx, ctypes.byref(params),
                                                                 ctypes.byref(quant_c), *args)
        return status, out

    def pool(self, kind: str, x: npt.ArrayLike, kernel: Pair, *, stride: Pair, pad: Pair,
             out_hw: Pair, act: Pair = (-128, 127)) -> tuple[int, I8]:
        """kind: "max" or "avg"."""
        xa = _i8(x)
        out = np.zeros((xa.shape[0], *out_hw, xa.shape[3]), dtype=np.int8)
        params = PoolParams(_tile(stride), _tile(pad), Activation(*act))
        fn = self.lib.arm_max_pool_s8 if kind == "max" else self.lib.arm_avgpool_s8
        status = fn(ctypes.byref(Context(None, 0)), ctypes.byref(params),
                    ctypes.byref(_dims(xa.shape)), _ptr(xa, c_int8),
                    ctypes.byref(Dims(1, kernel[0], kernel[1], 1)),
                    ctypes.byref(_dims(out.shape)), _ptr(out, c_int8))
        return status, out

    def softmax(self, x: npt.ArrayLike, *, mult: int, shift: int, diff_min: int) -> I8:
        xa = _i8(x)
        out = np.zeros_like(xa)
        rows = int(np.prod(xa.shape[:-1]))
        self.lib.arm_softmax_s8(_ptr(xa, c_int8), c_int32(rows), c_int32(xa.shape[-1]),
                                c_int32(mult), c_int32(shift), c_int32(diff_min),
                                _ptr(out, c_int8))
        return out

    def add(self, a: npt.ArrayLike, b: npt.ArrayLike, *, input_1_offset: int, input_1_mult: int,
            input_1_shift: int, input_2_offset: int, input_2_mult: int, input_2_shift: int,
            left_shift: int, out_offset: int, out_mult: int, out_shift: int,
            act: Pair = (-128, 127)) -> tuple[int, I8]:
        aa, ba = _i8(a), _i8(b)
        out = np.zeros_like(aa)
        status = self.lib.arm_elementwise_add_s8(
            _ptr(aa, c_int8), _ptr(ba, c_int8), *map(c_int32, (
                input_1_offset, input_1_mult, input_1_shift, input_2_offset, input_2_mult,
                input_2_shift, left_shift)), _ptr(out, c_int8),
            *map(c_int32, (out_offset, out_mult, out_shift, act[0], act[1], aa.size)))
        return status, out

    def mul(self, a: npt.ArrayLike, b: npt.ArrayLike, *, input_1_offset: int,
            input_2_offset: int, out_offset: int, out_mult: int, out_shift: int,
            act: Pair = (-128, 127)) -> tuple[int, I8]:
        aa, ba = _i8(a), _i8(b)
        out = np.zeros_like(aa)
        status = self.lib.arm_elementwise_mul_s8(
            _ptr(aa, c_int8), _ptr(ba, c_int8), c_int32(input_1_offset), c_int32(input_2_offset),
            _ptr(out, c_int8),
            *map(c_int32, (out_offset, out_mult, out_shift, act[0], act[1], aa.size)))
        return status, out

    def vector_sum(self, w: npt.ArrayLike, lhs_offset: int, rhs_offset: int,
                   bias: npt.ArrayLike | None) -> tuple[int, npt.NDArray[np.int32]]:
        """arm_vector_sum_s8, the 7-argument form of CMSIS-NN >= v7.0.0."""
        wa = _i8(w)
        ba = None if bias is None else _i32(bias)
        out = np.zeros(wa.shape[0], dtype=np.int32)
        status = self.lib.arm_vector_sum_s8(_ptr(out, c_int32), c_int32(wa.shape[1]),
                                            c_int32(wa.shape[0]), _ptr(wa, c_int8),
                                            c_int32(lhs_offset), c_int32(rhs_offset),
                                            None if ba is None else _ptr(ba, c_int32))
        return status, out
