"""Cortex-M backend: firmware projects for emulated boards, built with arm-none-eabi-gcc and run
in QEMU with deterministic instruction counts.

    build_firmware(files, out_dir, target, module) -> FirmwareInfo   (build.py)
    DeviceModel(out_dir).run(inputs) / .benchmark()                  (run.py)
    BOARDS, board_for(target)                                        (boards.py)
"""

from nnc.backends.cortex_m.boards import BOARDS, Board, board_for
from nnc.backends.cortex_m.build import FirmwareInfo, build_firmware, describe_module
from nnc.backends.cortex_m.run import COUNT_NOTE, DeviceModel, DeviceRun

__all__ = ["BOARDS", "COUNT_NOTE", "Board", "DeviceModel", "DeviceRun", "FirmwareInfo",
           "board_for", "build_firmware", "describe_module"]
