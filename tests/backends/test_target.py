from __future__ import annotations

import pytest

from nnc.backends.target import Target, detect_vector_isa, parse_target


def test_host_target(monkeypatch):
    monkeypatch.setenv("NNC_CC", "my-cc")
    t = parse_target("host")
    assert t.kind == "host" and t.is_host and t.cc == "my-cc"
    assert "-march=native" in t.cflags and "-fwrapv" in t.cflags and "-std=c99" in t.cflags
    assert not any(f.startswith("-O") or f == "-ffast-math" for f in t.cflags)
    assert t.ram_bytes is None and t.flash_bytes is None and t.mcpu is None
    assert parse_target(t) is t


def test_unknown_target_lists_known_ones():
    known = "cortex-m4, cortex-m55, cortex-m7, host, opencl"
    with pytest.raises(ValueError, match=rf"unknown target 'cortex-z9'; known targets: {known}"):
        parse_target("cortex-z9")


def test_target_is_frozen_and_fits_microcontrollers():
    t = Target("cortex-m7", "cortex-m", "arm-none-eabi-gcc", mcpu="cortex-m7", fpu="fpv5-d16",
               float_abi="hard", features=("dsp",), ram_bytes=512 * 1024,
               flash_bytes=2 * 1024 * 1024)
    with pytest.raises(AttributeError):
        t.cc = "x"  # type: ignore[misc]
    assert not t.is_host and "cortex-m7" in str(t)


@pytest.mark.parametrize("flags, isa, bits", [
    ("fpu sse2 avx avx2 fma", "avx2", 256),
    ("sse2 avx512f avx2", "avx512f", 512),
    ("sse2", "sse2", 128),
])
def test_detect_vector_isa_from_cpuinfo(flags, isa, bits):
    got_isa, got_bits, notable = detect_vector_isa(f"processor : 0\nflags\t\t: {flags}\n")
    assert (got_isa, got_bits) == (isa, bits)
    assert isa in notable or isa == "sse2"


def test_detect_vector_isa_arm64():
    isa, bits, _ = detect_vector_isa("Features\t: fp asimd evtstrm\n")
    assert (isa, bits) == ("neon", 128)


def test_host_compiler_is_the_newest_clang_else_gcc(monkeypatch):
    from nnc.backends import target

    monkeypatch.delenv("NNC_CC", raising=False)
    on_path = {"clang-14", "clang-16", "clang", "gcc"}
    monkeypatch.setattr(target.shutil, "which", lambda name: name if name in on_path else None)
    target.default_host_cc.cache_clear()
    try:
        assert parse_target("host").cc == "clang-16"
        assert "-ffp-contract=on" in parse_target("host").cflags
        on_path = {"gcc"}  # a machine with gcc only
        target.default_host_cc.cache_clear()
        assert parse_target("host").cc == "gcc"
        monkeypatch.setenv("NNC_CC", "my-cc")
        assert parse_target("host").cc == parse_target("opencl").cc == "my-cc"
    finally:
        target.default_host_cc.cache_clear()
