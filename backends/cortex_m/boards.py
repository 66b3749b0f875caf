"""The emulated boards a Cortex-M target runs on, one frozen `Board` each.

    >>> board_for("cortex-m7").qemu_machine
    'mps2-an500'

A board's support files are the union of its `folders` under `runtime_c/boards/` (later folders
win on a name clash), copied flat into `out/board/`: `startup.c`, `board.c` (the interface in
`runtime_c/include/nnc_board.h`), `board.ld` (which may INCLUDE `memory.ld` and other scripts).
`memory.ld`, when a board has one, is rewritten with the target's RAM/flash sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nnc.backends.target import Target

BOARDS_DIR = Path(__file__).resolve().parents[2] / "runtime_c" / "boards"


@dataclass(frozen=True, slots=True)
class Board:
    """One QEMU machine: how to run it, its memory, its clock and the CPU flags it needs."""

    name: str
    qemu_machine: str
    target: str  # the nnc target name it emulates
    folders: tuple[str, ...]  # under runtime_c/boards/, merged in order
    tick_hz: int  # nnc_board_ticks() rate in virtual time
    flash_origin: int
    flash_bytes: int  # code + constants region
    ram_origin: int
    ram_bytes: int  # data region: .data, .bss (arena), heap, stack
    mcpu: str
    mfpu: str | None
    mfloat_abi: str
    qemu_args: tuple[str, ...] = ()

    @property
    def cpu_flags(self) -> tuple[str, ...]:
        flags = [f"-mcpu={self.mcpu}", "-mthumb"]
        if self.mfpu:
            flags.append(f"-mfpu={self.mfpu}")
        flags.append(f"-mfloat-abi={self.mfloat_abi}")
        return tuple(flags)

    def source_dirs(self) -> tuple[Path, ...]:
        return tuple(BOARDS_DIR / f for f in self.folders)


MIB = 1 << 20

BOARDS: dict[str, Board] = {
    # QEMU hw/arm/mps2.c: ZBT SSRAM1 (4 MiB at 0x0) and SSRAM2/3 (4 MiB at 0x20000000);
    # CMSDK APB timer 0 at 0x40000000 clocked at SYSCLK = 25 MHz.
    "mps2-an500": Board(
        name="mps2-an500", qemu_machine="mps2-an500", target="cortex-m7",
        folders=("mps2-common", "mps2-an500"), tick_hz=25_000_000,
        flash_origin=0x0000_0000, flash_bytes=4 * MIB, ram_origin=0x2000_0000, ram_bytes=4 * MIB,
        mcpu="cortex-m7", mfpu="fpv5-d16", mfloat_abi="hard"),
    "mps2-an386": Board(
        name="mps2-an386", qemu_machine="mps2-an386", target="cortex-m4",
        folders=("mps2-common", "mps2-an386"), tick_hz=25_000_000,
        flash_origin=0x0000_0000, flash_bytes=4 * MIB, ram_origin=0x2000_0000, ram_bytes=4 * MIB,
        mcpu="cortex-m4", mfpu="fpv4-sp-d16", mfloat_abi="hard"),
    # QEMU hw/arm/mps2-tz.c (SSE-300): code and weights in the QSPI ROM (8 MiB at 0x28000000),
    # data in the SSE-300 SRAM (4 MiB at 0x21000000); runs in Secure state. Timer: the FPGAIO
    # counter, 20 MHz from the virtual clock.
    "mps3-an547": Board(
        name="mps3-an547", qemu_machine="mps3-an547", target="cortex-m55",
        folders=("mps3-an547",), tick_hz=20_000_000,
        flash_origin=0x2800_0000, flash_bytes=8 * MIB, ram_origin=0x2100_0000, ram_bytes=4 * MIB,
        mcpu="cortex-m55", mfpu="auto", mfloat_abi="hard"),
}


def board_for(target: Target | str) -> Board:
    """The emulated board of a Cortex-M target (by name or Target)."""
    name = target if isinstance(target, str) else target.name
    for board in BOARDS.values():
        if board.target == name:
            return board
    known = ", ".join(sorted(b.target for b in BOARDS.values()))
    raise KeyError(f"no emulated board for target {name!r}; boards exist for: {known}")


def memory_ld(board: Board, flash_bytes: int, ram_bytes: int) -> str:
    """A memory.ld with the board's origins and the given region sizes; with more RAM than the
    board has, it also sets __board_ram_end (the linker script keeps the stack below it)."""
    board_end = ""
    if ram_bytes > board.ram_bytes:
        board_end = (f"/* the emulated board's RAM ends here */\n"
                     f"__board_ram_end = {board.ram_origin + board.ram_bytes:#010x};\n")
    return (f"/* {board.name}, sizes of target memory (written by nnc) */\n"
            "MEMORY\n{\n"
            f"    FLASH (rx) : ORIGIN = {board.flash_origin:#010x}, LENGTH = {flash_bytes}\n"
            f"    RAM (rwx) : ORIGIN = {board.ram_origin:#010x}, LENGTH = {ram_bytes}\n"
            "}\n" + board_end)
