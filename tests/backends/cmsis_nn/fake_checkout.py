"""A CMSIS-NN checkout-shaped tree for tests, built from nnc's portable subset (CI cannot download
the real library): Include/ with the current real API (the portable header declares it), the
sources in Source/<Folder>/, CMakeLists.txt files like CMSIS-NN's, and decoys a build must leave
out as CMSIS-NN's own CMake build does:

- Source/ConvolutionFunctions/arm_convolve_f16.c: a float16 kernel that does not compile; its
  folder's CMakeLists.txt adds it only `if (ARM_NN_ENABLE_F16)` (off by default);
- Source/SoftmaxFunctions/arm_softmax_u8.c: broken, and its CMakeLists.txt does not list it;
- Source/FullyConnectedFunctions/arm_fully_connected_f32.c: broken, in a folder without a
  CMakeLists.txt (the float name alone must keep it out);
- Source/NNSupportFunctions/arm_nn_unused_s16.c: broken, listed by CMake, but none of the
  functions nnc calls needs it;
- a top-level CMakeLists.txt.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from nnc.backends.cmsis_nn import PORTABLE_ROOT

BROKEN = "#error this file must not be compiled by nnc\n"

DECOYS = {
    "Source/ConvolutionFunctions/arm_convolve_f16.c":
        '#include "arm_nnfunctions.h"\nfloat16_t arm_convolve_f16(void) { return broken; }\n',
    "Source/SoftmaxFunctions/arm_softmax_u8.c": BROKEN,
    "Source/FullyConnectedFunctions/arm_fully_connected_f32.c": BROKEN,
    "Source/NNSupportFunctions/arm_nn_unused_s16.c":
        BROKEN + "int32_t arm_nn_unused_s16(void)\n{\n    return 0;\n}\n",
}

# per-folder CMakeLists.txt in CMSIS-NN's style (file(GLOB), options off by default)
CMAKELISTS = {
    "ConvolutionFunctions": """# like CMSIS-NN's Source/ConvolutionFunctions/CMakeLists.txt
file(GLOB SRC_S8 "./*_s8*.c")
set(SRC_FLT "")
if (ARM_NN_ENABLE_F32)
  list(APPEND SRC_FLT arm_convolve_f32.c)
endif()
if (ARM_NN_ENABLE_F16)
  list(APPEND SRC_FLT arm_convolve_f16.c)
endif()
target_sources(cmsis-nn PRIVATE ${SRC_S8} ${SRC_FLT})
""",
    "SoftmaxFunctions": """file(GLOB SRC "./*_s8.c")
if (ARM_NN_ENABLE_F32 OR ARM_NN_ENABLE_F16)
  list(APPEND SRC arm_softmax_u8.c)
else()
  list(APPEND SRC "")
endif()
target_sources(cmsis-nn PRIVATE ${SRC})
""",
    "NNSupportFunctions": """file(GLOB SRC_S16 "./*_s16*.c")
target_sources(cmsis-nn PRIVATE ${SRC_S16})
""",
    "BasicMathFunctions": """file(GLOB SRC "./*_s8*.c" "./*_s16*.c")
target_sources(cmsis-nn PRIVATE ${SRC})
""",
    "PoolingFunctions": """file(GLOB SRC "./*_s8.c")
target_sources(cmsis-nn PRIVATE ${SRC})
""",
}

TOP_CMAKELISTS = """cmake_minimum_required(VERSION 3.15.6)
option(ARM_NN_ENABLE_F32 "Enable CMSIS-NN float32 extensions." OFF)
option(ARM_NN_ENABLE_F16 "Enable CMSIS-NN float16 extensions." OFF)
project(CMSISNN C)
add_library(cmsis-nn STATIC)
target_include_directories(cmsis-nn PUBLIC "Include")
add_subdirectory(Source)
"""


def make_checkout(root: Path) -> Path:
    """Write the checkout-shaped tree into `root` (created) and return it."""
    shutil.copytree(PORTABLE_ROOT / "Include", root / "Include")
    for src in sorted((PORTABLE_ROOT / "Source").glob("*/*.c")):
        dst = root / "Source" / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    for rel, text in DECOYS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for folder, text in CMAKELISTS.items():
        (root / "Source" / folder / "CMakeLists.txt").write_text(text)
    (root / "CMakeLists.txt").write_text(TOP_CMAKELISTS)
    return root


def expected_sources(root: Path) -> list[Path]:
    """What a build against the tree must compile: the portable subset's sources there."""
    return sorted((root / "Source" / p.parent.name / p.name).resolve()
                  for p in (PORTABLE_ROOT / "Source").glob("*/*.c"))


def use_old_vector_sum(root: Path) -> None:
    """Make the tree's header declare the 6-argument arm_vector_sum_s8 of CMSIS-NN v6."""
    header = root / "Include" / "arm_nnfunctions.h"
    text = header.read_text()
    new = re.sub(r"(arm_vector_sum_s8\([^;]*?)\s*const int32_t rhs_offset,", r"\1", text,
                 flags=re.S)
    assert new != text
    header.write_text(new)
