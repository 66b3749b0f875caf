"""The mps3-an547 board support (runtime_c/boards/mps3-an547) on its own, without a model.

A small program built with the board's startup, timer and linker script runs in QEMU's
`-M mps3-an547` with semihosting: it reads a file, runs a float loop and an MVE (Helium)
computation, times them with the board timer and writes a file. The tests check the output, the
exit status, that timer ticks are exactly repeatable and linear in work, that they convert to
instruction counts with the board's tick_hz, and that faults are reported with their layer.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
BOARD_DIR = ROOT / "runtime_c" / "boards" / "mps3-an547"
INCLUDE_DIR = ROOT / "runtime_c" / "include"
BOARD = json.loads((BOARD_DIR / "board.json").read_text())
CC = "arm-none-eabi-gcc"
QEMU = "qemu-system-arm"
ICOUNT_SHIFT = 7
NOPS = 4096  # straight-line nops in the program: an exactly known instruction count

pytestmark = [
    pytest.mark.needs_arm,
    pytest.mark.needs_qemu,
    pytest.mark.skipif(shutil.which(CC) is None, reason=f"{CC} not installed"),
    pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} not installed"),
]

# mode 0: normal run; 1: call through an unmapped address in layer 7; 2: unbounded recursion
# (stack overflow) in layer 2; 3: return 5 from main.
PROGRAM = r"""
#include <arm_mve.h>
#include <stdint.h>
#include <stdio.h>

#include "nnc_board.h"

volatile int32_t nnc_current_layer = -1;

static struct {
    int32_t mode;
    int32_t n;
    float x[4];
} cfg;

__attribute__((noinline)) static int32_t recurse(int32_t n)
{
    volatile int32_t pad[64];
    pad[0] = n;
    return n > 100000000 ? 0 : recurse(n + 1) + pad[0]; /* bounded only far past the stack */
}

/* The same call with and without NOPS straight-line nops: the difference is exactly NOPS. */
__attribute__((noinline)) static void no_nops(void)
{
    __asm volatile("" ::: "memory");
}

__attribute__((noinline)) static void nops(void)
{
    __asm volatile(".rept NOPS\n\tnop\n\t.endr" ::: "memory");
}

int main(void)
{
    nnc_board_init();
    FILE *f = fopen("input.bin", "rb");
    if (f == NULL || fread(&cfg, sizeof cfg, 1, f) != 1) {
        printf("NNC_TEST cannot read input.bin\n");
        return 2;
    }
    fclose(f);

    uint32_t t0 = nnc_board_ticks();
    no_nops();
    uint32_t t1 = nnc_board_ticks();
    nops();
    uint32_t t2 = nnc_board_ticks();
    float acc = 0.0f;
    for (int32_t i = 0; i < cfg.n; ++i) acc += cfg.x[i & 3] * (float)i;
    uint32_t t3 = nnc_board_ticks();

    /* Helium: 2 * x + 0.5 on four lanes, then the sum across lanes */
    float32x4_t v = vfmaq_f32(vdupq_n_f32(0.5f), vld1q_f32(cfg.x), vdupq_n_f32(2.0f));
    float mve = vgetq_lane_f32(v, 0) + vgetq_lane_f32(v, 1) + vgetq_lane_f32(v, 2)
                + vgetq_lane_f32(v, 3);

    printf("NNC_TEST acc=%.9g mve=%.9g empty=%lu nops=%lu loop=%lu\n", (double)acc, (double)mve,
           (unsigned long)(t1 - t0), (unsigned long)(t2 - t1), (unsigned long)(t3 - t2));
    FILE *o = fopen("output.bin", "wb");
    if (o == NULL || fwrite(&acc, sizeof acc, 1, o) != 1 || fclose(o) != 0) {
        printf("NNC_TEST cannot write output.bin\n");
        return 2;
    }
    if (cfg.mode == 1) {
        nnc_current_layer = 7;
        ((void (*)(void))0x0F000001u)(); /* nothing is mapped there */
    }
    if (cfg.mode == 2) {
        nnc_current_layer = 2;
        return (int)recurse(0);
    }
    return cfg.mode == 3 ? 5 : 0;
}
"""

_LINE = re.compile(r"NNC_TEST acc=(\S+) mve=(\S+) empty=(\d+) nops=(\d+) loop=(\d+)")


@dataclass(frozen=True)
class Run:
    rc: int
    output: str  # stdout and stderr together (semihosting's SYS_WRITE0 goes to stderr)
    out_file: bytes | None

    def figures(self) -> tuple[float, float, int, int, int]:
        m = _LINE.search(self.output)
        assert m, self.output
        return float(m[1]), float(m[2]), int(m[3]), int(m[4]), int(m[5])


def to_instructions(ticks: int) -> float:
    return ticks * (1e9 / BOARD["tick_hz"]) / (1 << ICOUNT_SHIFT)


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("an547")
    (work / "prog.c").write_text(PROGRAM.replace("NOPS", str(NOPS)))
    cmd = [CC, *BOARD["cpu_flags"], "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror",
           "-ffunction-sections", "-fdata-sections", f"-I{INCLUDE_DIR}",
           str(BOARD_DIR / "startup.c"), str(BOARD_DIR / "board.c"), str(work / "prog.c"),
           "--specs=rdimon.specs", "-Wl,--gc-sections", f"-T{BOARD_DIR / 'board.ld'}",
           f"-L{BOARD_DIR}", "-o", str(work / "prog.elf")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return work / "prog.elf"


def run(elf: Path, tmp: Path, mode: int = 0, n: int = 1000) -> Run:
    tmp.mkdir(parents=True, exist_ok=True)
    header = np.array([mode, n], dtype="<i4").tobytes()
    (tmp / "input.bin").write_bytes(header + np.array([1.5, 2.5, 3.0, 4.0], "<f4").tobytes())
    cmd = [QEMU, "-M", BOARD["qemu_machine"], *BOARD["qemu_args"],
           "-icount", f"shift={ICOUNT_SHIFT},align=off,sleep=off",
           "-semihosting-config", "enable=on,target=native", "-nographic",
           "-monitor", "none", "-serial", "null", "-kernel", str(elf)]
    proc = subprocess.run(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, timeout=30)
    out = tmp / "output.bin"
    return Run(proc.returncode, proc.stdout, out.read_bytes() if out.exists() else None)


def expected_acc(n: int) -> float:
    x = np.array([1.5, 2.5, 3.0, 4.0], np.float32)
    acc = np.float32(0)
    for i in range(n):
        acc = np.float32(acc + x[i & 3] * np.float32(i))
    return float(acc)


def test_runs_with_semihosting_files_fpu_and_mve(firmware: Path, tmp_path: Path) -> None:
    r = run(firmware, tmp_path)
    assert r.rc == 0, r.output
    acc, mve, *_ = r.figures()
    assert acc == pytest.approx(expected_acc(1000), rel=1e-6)
    assert mve == pytest.approx(2 * (1.5 + 2.5 + 3.0 + 4.0) + 4 * 0.5)
    assert r.out_file == np.float32(acc).tobytes()


def test_ticks_are_repeatable(firmware: Path, tmp_path: Path) -> None:
    a, b = run(firmware, tmp_path / "a"), run(firmware, tmp_path / "b")
    assert a.rc == b.rc == 0
    assert a.figures() == b.figures()


def test_ticks_convert_to_exact_instruction_counts(firmware: Path, tmp_path: Path) -> None:
    """NOPS straight-line instructions measure as NOPS (to within one tick) with tick_hz."""
    _, _, empty, nops, _ = run(firmware, tmp_path).figures()
    assert to_instructions(nops - empty) == pytest.approx(NOPS, abs=1.0)


def test_ticks_are_linear_in_work(firmware: Path, tmp_path: Path) -> None:
    loops = {n: run(firmware, tmp_path / str(n), n=n).figures()[4] for n in (1000, 2000, 4000)}
    per_iter_small = (loops[2000] - loops[1000]) / 1000
    per_iter_large = (loops[4000] - loops[2000]) / 2000
    assert per_iter_small == pytest.approx(per_iter_large, rel=1e-3)
    assert 2 <= to_instructions(per_iter_large) <= 50  # a float multiply-add loop step


def test_exit_status_reaches_the_host(firmware: Path, tmp_path: Path) -> None:
    assert run(firmware, tmp_path, mode=3).rc == 5


def test_fault_reports_name_layer_and_pc(firmware: Path, tmp_path: Path) -> None:
    r = run(firmware, tmp_path, mode=1)
    assert r.rc != 0
    m = re.search(r"NNC_FAULT (\w+) layer=(-?\d+) pc=(0x[0-9a-f]+)", r.output)
    assert m, r.output
    assert (m[1], m[2], m[3]) == ("BusFault", "7", "0x0f000000")


def test_stack_overflow_is_a_reported_fault(firmware: Path, tmp_path: Path) -> None:
    r = run(firmware, tmp_path, mode=2)
    assert r.rc != 0
    assert re.search(r"NNC_FAULT UsageFault layer=2 pc=0x[0-9a-f]+\n", r.output), r.output
    assert "(stack overflow)" in r.output
