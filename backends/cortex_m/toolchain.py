"""Finding the Arm toolchain and QEMU; a missing one is an NncError naming the Debian package."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from nnc.errors import NncError

TOOLCHAIN_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi"
QEMU_PACKAGE = "qemu-system-arm"
QEMU = "qemu-system-arm"


@dataclass(frozen=True, slots=True)
class Toolchain:
    cc: str  # absolute paths
    size: str
    nm: str


def tool_for(cc: str, tool: str) -> str:
    """`arm-none-eabi-size` next to `arm-none-eabi-gcc` (same prefix)."""
    return cc[: -len("gcc")] + tool if cc.endswith("gcc") else tool


@lru_cache(maxsize=8)
def find_toolchain(cc: str = "arm-none-eabi-gcc") -> Toolchain:
    """The cross compiler `cc` with its binutils and newlib's semihosting library."""
    path = shutil.which(cc)
    if path is None:
        raise NncError(f"the Arm cross compiler {cc!r} is not installed; install the Debian "
                       f"packages {TOOLCHAIN_PACKAGES} (apt-get install {TOOLCHAIN_PACKAGES})")
    tools = {}
    for tool in ("size", "nm"):
        found = shutil.which(tool_for(path, tool))
        if found is None:
            raise NncError(f"{tool_for(cc, tool)} is missing; install the Debian package "
                           "binutils-arm-none-eabi (it comes with gcc-arm-none-eabi)")
        tools[tool] = found
    specs = subprocess.run([path, "-print-file-name=rdimon.specs"], capture_output=True,
                           text=True).stdout.strip()
    if specs in ("", "rdimon.specs"):
        raise NncError(f"{cc} has no newlib (rdimon.specs not found); install the Debian "
                       "package libnewlib-arm-none-eabi")
    return Toolchain(cc=path, size=tools["size"], nm=tools["nm"])


@lru_cache(maxsize=8)
def supports_callgraph_info(cc: str) -> bool:
    """Whether `cc` takes -fcallgraph-info=su (GCC 10 and later): per-object call graphs with
    frame sizes, from which the stack estimate follows the calls into the library."""
    with tempfile.TemporaryDirectory(prefix="nnc_probe_") as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text("int probe(void) { return 0; }\n")
        try:
            proc = subprocess.run([cc, "-fcallgraph-info=su", "-c", str(src), "-o",
                                   str(Path(tmp) / "probe.o")], capture_output=True, cwd=tmp)
        except OSError:
            return False
        return proc.returncode == 0 and (Path(tmp) / "probe.ci").exists()


def find_qemu(qemu: str = QEMU) -> str:
    path = shutil.which(qemu)
    if path is None:
        raise NncError(f"the emulator {qemu!r} is not installed; install the Debian package "
                       f"{QEMU_PACKAGE} (apt-get install {QEMU_PACKAGE})")
    return path
