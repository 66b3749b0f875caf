"""Debug switches, all read from the environment in one place.

NNC_DEBUG=1     keep temporary build directories and print internal tracebacks for user errors
NNC_VERIFY=0    skip IR verification between passes (on by default)
NNC_DUMP_IR=dir write the IR after every pass into dir
NNC_CC=cc       the host C compiler (default: the newest clang on PATH, else gcc)
NNC_TUNING_CACHE=file|off  the tuning cache compiles use by default (default: the XDG one)
"""

from __future__ import annotations

import os


def debug() -> bool:
    return os.environ.get("NNC_DEBUG", "") not in ("", "0")


def verify() -> bool:
    return os.environ.get("NNC_VERIFY", "1") not in ("", "0")


def dump_ir_dir() -> str | None:
    return os.environ.get("NNC_DUMP_IR") or None


def host_cc() -> str | None:
    """NNC_CC, or None: then the backend picks (nnc.backends.target.default_host_cc)."""
    return os.environ.get("NNC_CC") or None


def tuning_cache() -> str | None:
    return os.environ.get("NNC_TUNING_CACHE") or None
