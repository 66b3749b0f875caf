"""Run a built C model from Python: `HostModel(out_dir)` loads `libmodel.so` with ctypes.

    >>> model = HostModel("out/")                              # doctest: +SKIP
    >>> model.inputs[0]                                        # doctest: +SKIP
    TensorInfo(name='x', shape=(1, 4), dtype='float32', nbytes=16)
    >>> y = model.run({"x": x})["y"]                           # doctest: +SKIP
    >>> model.benchmark(warmup=10, repeat=100)["latency_ms"]   # doctest: +SKIP
    {'median': 0.0012, 'min': 0.0011, 'max': 0.004, 'mean': 0.0013}

Everything is read from the library's descriptor tables, so a directory built earlier (or by
`make`) works without any Python-side metadata.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnc.backends.c.build import BENCH, LIBRARY
from nnc.backends.c.emit import DTYPE_CODES
from nnc.errors import NncError

CODE_DTYPES: dict[int, str] = {code: dtype for dtype, code in DTYPE_CODES.items()}


class _TensorDesc(ctypes.Structure):  # nnc_tensor_desc in nnc_runtime.h
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("rank", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("nbytes", ctypes.c_uint64),
    ]


class _LayerDesc(ctypes.Structure):  # nnc_layer_desc in nnc_runtime.h
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("op_kind", ctypes.c_char_p),
        ("op_name", ctypes.c_char_p),
        ("macs", ctypes.c_uint64),
    ]


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


@dataclass(frozen=True, slots=True)
class LayerInfo:
    name: str
    op_kind: str
    op_name: str
    macs: int


def detect_prefix(out_dir: str | Path) -> str:
    """The symbol prefix of the model in `out_dir`, read from its model.h."""
    header = Path(out_dir) / "model.h"
    try:
        text = header.read_text()
    except OSError as e:
        raise FileNotFoundError(f"{header} not found; pass the model's prefix explicitly") from e
    match = re.search(r"\bint\s+(\w+)_run\s*\(", text)
    if match is None:
        raise ValueError(f"{header} declares no <prefix>_run function")
    return match.group(1)


def check_elf(path: Path) -> None:
    """Refuse a shared library whose ELF headers point past its end (a truncated or cut copy):
    dlopen maps such a file and the process dies of SIGBUS on the first page past the end. The
    manifest's size check covers builds that have one; this covers the others."""
    import struct

    with open(path, "rb") as f:
        head = f.read(64)
        size = os.fstat(f.fileno()).st_size
        bad = f"{path}: not a complete shared library ({size:,} bytes{{}}); compile again"
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:
            if head[:4] == b"\x7fELF" and head[4] == 1 and len(head) >= 52:
                return  # a 32-bit library: not what nnc builds on the host, dlopen judges it
            raise NncError(bad.format(", no 64-bit ELF header"))
        order = "<" if head[5] == 1 else ">"
        phoff, shoff = struct.unpack_from(order + "QQ", head, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(order + "HHHH", head, 0x36)
        if shoff + shentsize * shnum > size or phoff + phentsize * phnum > size:
            raise NncError(bad.format(", its headers point past the end"))
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        for k in range(phnum):
            offset, = struct.unpack_from(order + "Q", table, k * phentsize + 8)
            filesz, = struct.unpack_from(order + "Q", table, k * phentsize + 32)
            if offset + filesz > size:
                raise NncError(bad.format(f", segment {k} ends at byte {offset + filesz:,}"))


def _load_private_copy(path: Path) -> ctypes.CDLL:
    """dlopen a private copy: glibc hands back an already loaded library with the same path,
    so a model rebuilt in place would otherwise keep running its old code."""
    fd, tmp = tempfile.mkstemp(prefix="nnc_model_", suffix=".so")
    os.close(fd)
    try:
        shutil.copyfile(path, tmp)
        return ctypes.CDLL(tmp)
    finally:
        os.unlink(tmp)  # the mapping stays valid after the file is gone


class HostModel:
    """A compiled model in `out_dir` (`libmodel.so` + `bench`), callable from Python."""

    def __init__(self, out_dir: str | Path, prefix: str | None = None) -> None:
        self._load(out_dir, prefix)
        init = getattr(self._lib, f"{self.prefix}_init")
        init.restype = ctypes.c_int
        rc = init()
        if rc != 0:
            raise RuntimeError(f"{self.prefix}_init() failed with code {rc}")

    def _load(self, out_dir: str | Path, prefix: str | None) -> None:
        """Load the library and read its descriptors (tensors, layers, arena); no init yet."""
        self.out_dir = Path(out_dir)
        lib_path = self.out_dir / LIBRARY
        if not lib_path.exists():
            raise FileNotFoundError(f"{lib_path} not found; build the model first")
        self.prefix = prefix or detect_prefix(self.out_dir)
        check_elf(lib_path)
        self._lib = _load_private_copy(lib_path)
        self.inputs = self._tensors("inputs")
        self.outputs = self._tensors("outputs")
        n_layers = self._symbol("num_layers", ctypes.c_int32).value
        table = self._symbol("layers", _LayerDesc * max(n_layers, 1))
        self.layers = tuple(
            LayerInfo(_text(d.name), _text(d.op_kind), _text(d.op_name), int(d.macs))
            for d in table[:n_layers])
        self.arena_size = int(self._symbol("arena_size", ctypes.c_uint64).value)
        self._run = getattr(self._lib, f"{self.prefix}_run")
        self._run.restype = ctypes.c_int
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._lock = threading.Lock()  # the C model keeps intermediates in one static arena

    def _symbol(self, name: str, ctype: Any) -> Any:
        try:
            return ctype.in_dll(self._lib, f"{self.prefix}_{name}")
        except ValueError as e:
            raise ValueError(f"{self.out_dir / LIBRARY} has no symbol {self.prefix}_{name}; "
                             f"is {self.prefix!r} the right prefix?") from e

    def _tensors(self, kind: str) -> tuple[TensorInfo, ...]:
        count = self._symbol(f"num_{kind}", ctypes.c_int32).value
        table = self._symbol(kind, _TensorDesc * max(count, 1))
        out = []
        for d in table[:count]:
            if d.dtype not in CODE_DTYPES:
                raise ValueError(f"{kind[:-1]} {_text(d.name)!r}: unknown dtype code {d.dtype}")
            shape = tuple(int(d.shape[i]) for i in range(d.rank))
            out.append(TensorInfo(_text(d.name), shape, CODE_DTYPES[d.dtype], int(d.nbytes)))
        return tuple(out)

    # ---- running

    def _check_inputs(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        known = {t.name for t in self.inputs}
        unknown = [n for n in inputs if n not in known]
        if unknown:
            names = ", ".join(repr(t.name) for t in self.inputs) or "none"
            raise ValueError(f"unknown input {unknown[0]!r}; the model's inputs are: {names}")
        arrays = []
        for t in self.inputs:
            if t.name not in inputs:
                raise ValueError(f"missing input {t.name!r} ({t.dtype}{list(t.shape)})")
            value = inputs[t.name]
            arr = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=t.dtype)
            if tuple(arr.shape) != t.shape:
                raise ValueError(f"input {t.name!r} has shape {tuple(arr.shape)} but the model "
                                 f"expects {t.shape}")
            if str(arr.dtype) != t.dtype:
                raise ValueError(f"input {t.name!r} has dtype {arr.dtype} but the model "
                                 f"expects {t.dtype}")
            arrays.append(np.ascontiguousarray(arr))
        return arrays

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run once; returns {output name: array}."""
        arrays = self._check_inputs(inputs)
        outs = [np.empty(t.shape, dtype=t.dtype) for t in self.outputs]
        in_ptrs = (ctypes.c_void_p * max(len(arrays), 1))(*[a.ctypes.data for a in arrays])
        out_ptrs = (ctypes.c_void_p * max(len(outs), 1))(*[a.ctypes.data for a in outs])
        with self._lock:
            rc = self._run(in_ptrs, out_ptrs)
        if rc != 0:
            raise RuntimeError(f"{self.prefix}_run() failed with code {rc}")
        return {t.name: a for t, a in zip(self.outputs, outs, strict=True)}

    __call__ = run

    def benchmark(self, warmup: int = 10, repeat: int = 100,
                  inputs: Mapping[str, Any] | None = None, seed: int | None = None,
                  timeout: float | None = None) -> dict[str, Any]:
        """Time the model with the `bench` executable (no Python in the loop).

        Returns the bench JSON: {"latency_ms": {"median", "min", "max", "mean"}, "warmup",
        "repeat", "arena_bytes", "inputs", "outputs"}. Inputs default to pseudo-random data."""
        exe = self.out_dir / BENCH
        if not exe.exists():
            raise FileNotFoundError(f"{exe} not found; build with bench=True")
        cmd = [str(exe.resolve()), "--warmup", str(int(warmup)), "--repeat", str(int(repeat))]
        if seed is not None:
            cmd += ["--seed", str(int(seed))]
        with tempfile.TemporaryDirectory(prefix="nnc_bench_") as tmp:
            if inputs is not None:
                for i, arr in enumerate(self._check_inputs(inputs)):
                    path = Path(tmp) / f"input{i}.bin"
                    arr.tofile(path)
                    cmd += ["--input", str(i), str(path)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"bench failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return json.loads(proc.stdout)


def _text(b: bytes | None) -> str:
    return b.decode("utf-8") if b is not None else ""
