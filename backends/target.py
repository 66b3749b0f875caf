"""Compilation targets: which CPU, which vector ISA, how much memory, which toolchain flags.

>>> t = parse_target("host")
>>> t.kind
'host'
>>> m7 = parse_target("cortex-m7", ram="512K", flash="2M")
>>> (m7.mcpu, m7.ram_bytes, m7.flash_bytes)
('cortex-m7', 524288, 2097152)
>>> parse_target("pdp-11")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown target 'pdp-11'; known targets: cortex-m4, ..., host, opencl, tvm
"""

from __future__ import annotations

import functools
import platform
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nnc import config

# Flags every generated C file is built with, whatever the target.
# -fwrapv: integer tensor math wraps like numpy instead of being undefined on overflow.
# -fno-math-errno: lets sqrt & co. inline/vectorize; NaN/inf semantics are unchanged
# (unlike -ffast-math, which the backend must never use).
# -fopenmp-simd: honours `#pragma omp simd` without pulling in the OpenMP runtime.
COMMON_CFLAGS: tuple[str, ...] = ("-std=c99", "-fwrapv", "-fno-math-errno", "-fopenmp-simd")
# Host only: a multiply-add inside one C expression may become one FMA (clang's default for C;
# gcc 12 treats "on" as "off"), never across statements (`fast`, gcc's GNU-C default, once made
# a peeled tail round unlike its vector body and flipped vgg19's softmax: roadmap "Host fp32").
HOST_CFLAGS: tuple[str, ...] = ("-march=native", "-ffp-contract=on")


@dataclass(frozen=True, slots=True)
class Target:
    """A compilation target. Host targets leave the microcontroller fields None/empty.

    `cflags` never contain an optimisation level: the build picks `-O<n>` separately."""

    name: str
    kind: str  # "host" | "cortex-m" | "opencl" | "tvm"
    cc: str
    cflags: tuple[str, ...] = COMMON_CFLAGS
    ldflags: tuple[str, ...] = ()
    vector_isa: str | None = None  # e.g. "avx512f", "avx2", "sse2", "neon", "mve", "dsp"
    vector_bits: int = 0  # widest SIMD register, for schedules
    mcpu: str | None = None
    fpu: str | None = None
    float_abi: str | None = None
    features: tuple[str, ...] = ()  # e.g. ("dsp", "mve") or CPU flags worth reporting
    ram_bytes: int | None = None
    flash_bytes: int | None = None

    @property
    def is_host(self) -> bool:
        return self.kind == "host"

    def with_cc(self, cc: str) -> Target:
        return replace(self, cc=cc)

    def with_memory(self, ram_bytes: int | str | None = None,
                    flash_bytes: int | str | None = None) -> Target:
        """This target with other RAM/flash sizes (bytes, or strings like "512K"); None keeps."""
        if self.is_host and (ram_bytes is not None or flash_bytes is not None):
            raise ValueError("the host target has no RAM/flash limits to override")
        ram = self.ram_bytes if ram_bytes is None else parse_size(ram_bytes, "RAM")
        flash = self.flash_bytes if flash_bytes is None else parse_size(flash_bytes, "flash")
        return replace(self, ram_bytes=ram, flash_bytes=flash)

    @property
    def arch_flags(self) -> tuple[str, ...]:
        """-mcpu/-mfpu/-mfloat-abi/-mthumb of a microcontroller target (empty for the host)."""
        if self.mcpu is None:
            return ()
        flags = [f"-mcpu={self.mcpu}", "-mthumb"]
        if self.fpu:
            flags.append(f"-mfpu={self.fpu}")
        if self.float_abi:
            flags.append(f"-mfloat-abi={self.float_abi}")
        return tuple(flags)

    def __str__(self) -> str:
        isa = f" {self.vector_isa}" if self.vector_isa else ""
        return f"{self.name} ({self.kind}{isa}, cc={self.cc})"


# x86 ISA extensions from widest to narrowest, as /proc/cpuinfo spells them.
_X86_ISAS: tuple[tuple[str, int], ...] = (("avx512f", 512), ("avx2", 256), ("avx", 256),
                                          ("sse4_2", 128), ("sse2", 128))


def _cpu_flags(cpuinfo: str) -> frozenset[str]:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / arm64 spelling
            return frozenset(value.split())
    return frozenset()


def detect_vector_isa(cpuinfo: str | None = None) -> tuple[str | None, int, tuple[str, ...]]:
    """(widest vector ISA, its register bits, notable CPU flags) of this machine, for reporting."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = _cpu_flags(cpuinfo)
    notable = tuple(sorted(f for f in flags if f.startswith(("avx", "sse4", "fma", "f16c"))
                           or f in ("asimd", "neon", "sve", "fphp", "asimdhp")))
    for isa, bits in _X86_ISAS:
        if isa in flags:
            return isa, bits, notable
    if flags & {"asimd", "neon"} or platform.machine() in ("aarch64", "arm64"):
        return "neon", 128, notable
    return None, 0, notable


def find_clang() -> str | None:
    """The newest versioned clang on PATH (`clang-15`: Debian's pocl installs it without the
    plain name), else `clang`, else None."""
    for name in (*(f"clang-{v}" for v in range(30, 10, -1)), "clang"):
        if shutil.which(name):
            return name
    return None


@functools.cache
def default_host_cc() -> str:
    """The host C compiler when NNC_CC is unset: clang when present (clang-15 ran the same C
    1.16-1.37x faster than gcc 12 on KWS/VWW/IC; README "Host fp32"), else gcc."""
    return find_clang() or "gcc"


def host_cc() -> str:
    """NNC_CC, else `default_host_cc()`."""
    return config.host_cc() or default_host_cc()


def host_target(**overrides: Any) -> Target:
    """The machine we are running on, built with `host_cc()`, `-march=native` and in-expression
    FMA contraction (`HOST_CFLAGS`)."""
    isa, bits, features = detect_vector_isa()
    base = Target(
        name="host",
        kind="host",
        cc=host_cc(),
        cflags=COMMON_CFLAGS + HOST_CFLAGS,
        ldflags=("-lm",),
        vector_isa=isa,
        vector_bits=bits,
        features=features,
    )
    return replace(base, **overrides)


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20,
          "MB": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}


def parse_size(size: int | str, what: str = "size") -> int:
    """Bytes from an int or a string with a binary unit: "512K" -> 524288, "2M", "1.5M", "4096".

    >>> parse_size("512K"), parse_size("2MiB"), parse_size(100)
    (524288, 2097152, 100)
    """
    if isinstance(size, bool):
        raise ValueError(f"{what} {size!r} is not a size")
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(size))
        unit = match.group(2).upper() if match else ""
        if match is None or unit not in _UNITS:
            raise ValueError(f"{what} {size!r} is not a size; write e.g. 512K, 2M or 65536")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"{what} must be positive, got {size!r}")
    return value


def format_size(n: int) -> str:
    """The shortest exact spelling of `n` bytes: 524288 -> "512K", 100 -> "100"."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


# Cortex-M targets. RAM/flash default to the QEMU board each one runs on (see
# backends/cortex_m/boards.py): mps2-an500 (M7) and mps2-an386 (M4) map 4 MiB of code memory
# at 0x0 (our "flash") and 4 MiB of data SRAM at 0x20000000; mps3-an547 (M55) is described there.
CORTEX_M_CC = "arm-none-eabi-gcc"
MIB = 1 << 20


def cortex_m_target(name: str, mcpu: str, fpu: str | None, features: tuple[str, ...],
                    ram_bytes: int, flash_bytes: int, vector_isa: str | None,
                    vector_bits: int) -> Target:
    return Target(name=name, kind="cortex-m", cc=CORTEX_M_CC, cflags=COMMON_CFLAGS,
                  vector_isa=vector_isa, vector_bits=vector_bits, mcpu=mcpu, fpu=fpu,
                  float_abi="hard", features=features, ram_bytes=ram_bytes,
                  flash_bytes=flash_bytes)


def cortex_m7() -> Target:
    """Cortex-M7 with double-precision FPU and DSP extension (emulated: mps2-an500)."""
    return cortex_m_target("cortex-m7", "cortex-m7", "fpv5-d16", ("dsp", "fpu-dp"),
                           4 * MIB, 4 * MIB, "dsp", 32)


def cortex_m4() -> Target:
    """Cortex-M4F with single-precision FPU and DSP extension (emulated: mps2-an386)."""
    return cortex_m_target("cortex-m4", "cortex-m4", "fpv4-sp-d16", ("dsp", "fpu-sp"),
                           4 * MIB, 4 * MIB, "dsp", 32)


def cortex_m55() -> Target:
    """Cortex-M55 with Helium (MVE integer + float) (emulated: mps3-an547). -mfpu=auto lets
    -mcpu pick the FPU and MVE; memory as QEMU's board: 8 MiB QSPI for code and weights, 4 MiB
    SSE-300 SRAM for data."""
    return cortex_m_target("cortex-m55", "cortex-m55", "auto", ("dsp", "mve", "mve-fp", "fpu-dp"),
                           4 * MIB, 8 * MIB, "mve", 128)


def opencl_target() -> Target:
    """An OpenCL 1.2 device (PoCL's CPU device, a GPU, ...): kernels in model.cl, built at run
    time by the device's driver; the host runtime is C built with the host compiler against
    the ICD loader (-lOpenCL). Which device runs it is chosen at run time (`device=`). The
    register tiles take this CPU's vector width, the width of PoCL's CPU device here (at 128
    bits on AVX-512 resnet50 ran 3.3x host C's time, at 512 about 1x; README "OpenCL"); a
    GPU's mapping spreads the tiles' lanes over work items anyway."""
    isa, bits, _ = detect_vector_isa()
    return Target(name="opencl", kind="opencl", cc=host_cc(), cflags=COMMON_CFLAGS,
                  ldflags=("-lOpenCL",), vector_isa=isa, vector_bits=bits)


def tvm_target() -> Target:
    """Apache TVM: the loop IR as tirx PrimFuncs, built by TVM's LLVM code generator for this
    CPU into a TVM runtime module (backends/tvm). Scheduled like the host (same vector ISA)."""
    return host_target(name="tvm", kind="tvm")


# name -> factory
KNOWN_TARGETS: dict[str, Callable[[], Target]] = {
    "host": host_target,
    "opencl": opencl_target,
    "tvm": tvm_target,
    "cortex-m7": cortex_m7,
    "cortex-m4": cortex_m4,
    "cortex-m55": cortex_m55,
}


def parse_target(spec: str | Target, ram: int | str | None = None,
                 flash: int | str | None = None) -> Target:
    """Target from its name (`"host"`, `"cortex-m7"`); a Target passes through unchanged.

    `ram`/`flash` override a microcontroller's memory sizes (bytes or "512K", "2M")."""
    if isinstance(spec, Target):
        target = spec
    else:
        name = spec.strip().lower()
        factory = KNOWN_TARGETS.get(name)
        if factory is None:
            known = ", ".join(sorted(KNOWN_TARGETS))
            raise ValueError(f"unknown target {spec!r}; known targets: {known}")
        target = factory()
    if ram is None and flash is None:
        return target
    return target.with_memory(ram, flash)
