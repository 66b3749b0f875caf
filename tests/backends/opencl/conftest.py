"""OpenCL tests run where an OpenCL platform with a device is found (CI installs PoCL: `make
toolchain`); elsewhere they skip with the reason."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest


def opencl_device_count() -> int:
    """Devices over all platforms the ICD loader finds (0 without a loader or platform)."""
    name = ctypes.util.find_library("OpenCL")
    if name is None:
        return 0
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return 0
    platforms = (ctypes.c_void_p * 16)()
    n = ctypes.c_uint(0)
    if lib.clGetPlatformIDs(16, platforms, ctypes.byref(n)) != 0:
        return 0
    total = 0
    for i in range(n.value):
        nd = ctypes.c_uint(0)
        all_types = ctypes.c_uint64(0xFFFFFFFF)
        if lib.clGetDeviceIDs(ctypes.c_void_p(platforms[i]), all_types, 0, None,
                              ctypes.byref(nd)) == 0:
            total += nd.value
    return total


HAVE_OPENCL = opencl_device_count() > 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="no OpenCL platform/device (install pocl-opencl-icd "
                            "ocl-icd-opencl-dev opencl-c-headers clinfo)")
    for item in items:
        if "needs_opencl" in item.keywords and not HAVE_OPENCL:
            item.add_marker(skip)
