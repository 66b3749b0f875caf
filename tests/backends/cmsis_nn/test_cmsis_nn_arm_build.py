"""Every source of the portable CMSIS-NN subset compiles warning-free for Cortex-M7 and Cortex-M55,
and the feature macros pick the DSP / Helium scratch sizes there."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .cmsis_nn_lib import CMSIS_NN_DIR, SOURCES, WARNINGS

ARM_GCC = shutil.which("arm-none-eabi-gcc")

CPUS = {
    "cortex-m7": (["-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard"], "ARM_MATH_DSP"),
    "cortex-m55": (["-mcpu=cortex-m55", "-mfloat-abi=hard"], "ARM_MATH_MVEI"),
}

PROBE = """#include "arm_nnfunctions.h"
#if !defined({macro})
#error "{macro} is not defined"
#endif
int probe(void) {{ return ARM_CMSIS_NN_SUCCESS; }}
"""


@pytest.mark.needs_arm
@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_sources_compile_for_cortex_m(cpu: str, tmp_path: Path) -> None:
    if ARM_GCC is None:
        pytest.skip("needs gcc-arm-none-eabi")
    flags, macro = CPUS[cpu]
    probe = tmp_path / "probe.c"
    probe.write_text(PROBE.format(macro=macro))
    for src in [*SOURCES, probe]:
        cmd = [ARM_GCC, *flags, "-mthumb", *WARNINGS, "-O2", f"-I{CMSIS_NN_DIR / 'Include'}",
               "-c", str(src), "-o", str(tmp_path / (src.stem + ".o"))]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"{src.name} for {cpu}:\n{r.stderr}"
