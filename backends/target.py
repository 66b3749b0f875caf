"""Compilation targets: which CPU, which vector ISA, how much memory, which toolchain flags.

>>> t = parse_target("host")
>>> t.kind
'host'
>>> parse_target("pdp-11")
Traceback (most recent call last):
...
ValueError: unknown target 'pdp-11'; known targets: host
"""

from __future__ import annotations

import platform
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


@dataclass(frozen=True, slots=True)
class Target:
    """A compilation target. Host targets leave the microcontroller fields None/empty.

    `cflags` never contain an optimisation level: the build picks `-O<n>` separately."""

    name: str
    kind: str  # "host" | "cortex-m"
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


def host_target(**overrides: Any) -> Target:
    """The machine we are running on, built with `nnc.config.host_cc()` and `-march=native`."""
    isa, bits, features = detect_vector_isa()
    base = Target(
        name="host",
        kind="host",
        cc=config.host_cc(),
        cflags=COMMON_CFLAGS + ("-march=native",),
        ldflags=("-lm",),
        vector_isa=isa,
        vector_bits=bits,
        features=features,
    )
    return replace(base, **overrides)


# name -> factory; Cortex-M targets register here when they arrive.
KNOWN_TARGETS: dict[str, Callable[[], Target]] = {"host": host_target}


def parse_target(spec: str | Target) -> Target:
    """Target from its name (`"host"`); a Target passes through unchanged."""
    if isinstance(spec, Target):
        return spec
    name = spec.strip().lower()
    factory = KNOWN_TARGETS.get(name)
    if factory is None:
        known = ", ".join(sorted(KNOWN_TARGETS))
        raise ValueError(f"unknown target {spec!r}; known targets: {known}")
    return factory()
