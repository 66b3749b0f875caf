"""Cortex-M targets and boards: flags, memory defaults and overrides (no toolchain needed)."""

from __future__ import annotations

import pytest

from nnc.backends.cortex_m.boards import BOARDS, board_for, memory_ld
from nnc.backends.target import format_size, parse_size, parse_target


@pytest.mark.parametrize("name, fpu, features", [
    ("cortex-m7", "fpv5-d16", {"dsp"}),
    ("cortex-m4", "fpv4-sp-d16", {"dsp"}),
    ("cortex-m55", "auto", {"dsp", "mve"}),
])
def test_cortex_m_targets(name: str, fpu: str, features: set[str]) -> None:
    t = parse_target(name)
    assert t.kind == "cortex-m" and not t.is_host and t.cc == "arm-none-eabi-gcc"
    assert t.mcpu == name and t.fpu == fpu and t.float_abi == "hard"
    assert features <= set(t.features)
    assert t.arch_flags[:2] == (f"-mcpu={name}", "-mthumb")
    assert "-mfloat-abi=hard" in t.arch_flags
    assert not any(f.startswith("-O") for f in t.cflags)


@pytest.mark.parametrize("name", ["cortex-m7", "cortex-m4"])
def test_memory_defaults_are_the_emulated_boards(name: str) -> None:
    t, b = parse_target(name), board_for(name)
    assert (t.ram_bytes, t.flash_bytes) == (b.ram_bytes, b.flash_bytes) == (4 << 20, 4 << 20)
    assert b.cpu_flags == t.arch_flags


def test_memory_override() -> None:
    t = parse_target("cortex-m7", ram="512K", flash="2M")
    assert (t.ram_bytes, t.flash_bytes) == (512 * 1024, 2 * 1024 * 1024)
    assert parse_target("cortex-m4").with_memory(ram_bytes=65536).ram_bytes == 65536
    assert parse_target(t) is t
    with pytest.raises(ValueError, match="host target has no RAM/flash"):
        parse_target("host", ram="1M")


@pytest.mark.parametrize("text, value", [
    ("512K", 512 << 10), ("2M", 2 << 20), ("2MiB", 2 << 20), ("1.5M", 3 << 19), ("4096", 4096),
    ("64kb", 64 << 10), (1000, 1000), ("1G", 1 << 30),
])
def test_parse_size(text: str | int, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "12Q", "-1K", "0", "K"])
def test_parse_size_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="size|positive"):
        parse_size(bad, "RAM")


def test_format_size() -> None:
    assert [format_size(n) for n in (512 << 10, 4 << 20, 1000, 1 << 30)] == \
        ["512K", "4M", "1000", "1G"]


def test_unknown_board() -> None:
    with pytest.raises(KeyError, match="no emulated board for target 'host'"):
        board_for("host")


def test_boards_are_consistent() -> None:
    for name, b in BOARDS.items():
        assert b.name == name and b.tick_hz > 0
        for d in b.source_dirs():
            assert d.is_dir(), d
        files = {f.name for d in b.source_dirs() for f in d.iterdir()}
        assert {"startup.c", "board.c", "board.ld"} <= files
    text = memory_ld(BOARDS["mps2-an500"], 8 << 20, 1 << 20)
    assert "ORIGIN = 0x00000000, LENGTH = 8388608" in text
    assert "ORIGIN = 0x20000000, LENGTH = 1048576" in text
