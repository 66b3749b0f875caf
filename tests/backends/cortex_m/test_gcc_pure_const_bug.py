"""The GCC 12 miscompilation behind issue 11's silent wrong int8 outputs on Cortex-M, and nnc's fix.

`data/gcc_pure_const.c` is a 20-line program with no undefined behaviour whose one transpose call
GCC 12.2 for arm-none-eabi deletes at -O2/-O3 (docs/gcc-pure-const-bug.md). Built with nnc's
`NNC_KERNEL` (what every generated kernel carries, runtime_c/include/nnc_runtime.h) it must print
the right sum at every optimization level; built with plain `noinline` the test records whether
this toolchain still has the bug (so a toolchain upgrade that fixes it is visible, not a failure).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
COMMON = ROOT / "runtime_c" / "boards" / "mps2-common"
BOARD = ROOT / "runtime_c" / "boards" / "mps2-an500"
SOURCE = Path(__file__).parent / "data" / "gcc_pure_const.c"
CC = "arm-none-eabi-gcc"
QEMU = "qemu-system-arm"
CPU = ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"]
EXPECTED = "110"

pytestmark = [
    pytest.mark.needs_arm,
    pytest.mark.needs_qemu,
    pytest.mark.skipif(shutil.which(CC) is None, reason=f"{CC} not installed"),
    pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} not installed"),
]


def _run(tmp: Path, opt: str, kernel: str) -> str:
    elf = tmp / f"prog{opt}{len(kernel)}.elf"
    cmd = [CC, *CPU, "-std=c99", opt, "-fwrapv", f"-DKERNEL={kernel}",
           f"-I{ROOT / 'runtime_c' / 'include'}", f"-I{COMMON}", str(SOURCE),
           str(COMMON / "startup.c"), "--specs=rdimon.specs", "-Wl,--gc-sections",
           f"-T{BOARD / 'board.ld'}", f"-L{BOARD}", f"-L{COMMON}", "-o", str(elf)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([QEMU, "-M", "mps2-an500", "-semihosting-config",
                           "enable=on,target=native", "-nographic", "-monitor", "none",
                           "-serial", "null", "-kernel", str(elf)],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("opt", ["-O0", "-O1", "-O2", "-O3", "-Os"])
def test_nnc_kernel_attribute_keeps_the_call(opt, tmp_path):
    assert _run(tmp_path, opt, "NNC_KERNEL") == EXPECTED


def test_toolchain_bug_status(tmp_path):
    """Documents the toolchain: with plain noinline, GCC 12.2 prints 0 at -O2."""
    got = _run(tmp_path, "-O2", "__attribute__((noinline))")
    version = subprocess.run([CC, "-dumpversion"], capture_output=True, text=True).stdout.strip()
    if got != EXPECTED:
        print(f"{CC} {version} still miscompiles the reproducer at -O2 (printed {got})")
    assert got in (EXPECTED, "0")
