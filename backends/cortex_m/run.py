"""Run a Cortex-M firmware in QEMU: `DeviceModel(out_dir)` with `run` and `benchmark`.

    >>> dev = DeviceModel("out")                                 # doctest: +SKIP
    >>> y = dev.run({"input": x})["output"]                      # doctest: +SKIP
    >>> dev.benchmark()["instructions"]                          # doctest: +SKIP
    >>> runs = dev.execute_batch([{"input": x0}, {"input": x1}])  # doctest: +SKIP

`execute_batch` runs many samples in one emulator start (the firmware's batch mode: batch.bin in,
batch_out.bin and batch_ticks.bin out; see runtime_c/src/device_main.c), with per-sample outputs
and instruction counts, a progress callback per sample and a timeout per sample.

QEMU runs with `-icount shift=7,align=off,sleep=off`: the virtual clock advances exactly 2^7 ns
per guest instruction, so the board timer (tick_hz) read around the model and each kernel gives
exact, repeatable instruction counts: instructions = ticks * (1e9 / tick_hz) / 128. These are
instructions executed by the emulator, not cycles of a real core (no pipeline, cache or wait
states are modelled). Everything is read from `device.json` next to `firmware.elf`.
"""

from __future__ import annotations

import json
import queue
import re
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnc.backends.cortex_m.boards import BOARDS, Board
from nnc.backends.cortex_m.build import DEVICE_JSON, FIRMWARE
from nnc.backends.cortex_m.toolchain import QEMU, find_qemu
from nnc.errors import NncError

ICOUNT_SHIFT = 7
NS_PER_INSTRUCTION = 1 << ICOUNT_SHIFT
DEFAULT_TIMEOUT_S = 120.0
COUNT_NOTE = "instructions executed in QEMU (emulated), not cycles"
STACK_RESERVE = 4096  # bytes: check-fit's default stack reserve (passes/check_fit.py)
STACK_REGION = 0x10000  # the linker scripts' default __stack_size

_RESULT = re.compile(r"^NNC_RESULT status=(-?\d+) total_ticks=(\d+) layers=(\d+) "
                     r"stack_bytes=(\d+)", re.M)
_LAYER = re.compile(r"^NNC_LAYER (\d+) ticks=(\d+)", re.M)
_FAULT = re.compile(r"NNC_FAULT (\w+) layer=(-?\d+) pc=(0x[0-9a-f]+)")
_ERROR = re.compile(r"^NNC_ERROR (.*)$", re.M)
_SAMPLE = re.compile(r"^NNC_SAMPLE (\d+) status=(-?\d+)")
BATCH_MAGIC = b"NNCB"
BATCH_VERSION = 1


def qemu_command(qemu: str, board: Board, elf: str | Path,
                 monitor: str | Path | None = None) -> list[str]:
    """The QEMU command line that runs `elf` on `board` with deterministic instruction counting
    and semihosting (files relative to QEMU's working directory)."""
    mon = f"unix:{monitor},server=on,wait=off" if monitor else "none"
    return [qemu, "-M", board.qemu_machine, *board.qemu_args,
            "-icount", f"shift={ICOUNT_SHIFT},align=off,sleep=off",
            "-semihosting-config", "enable=on,target=native",
            "-nographic", "-monitor", mon, "-serial", "null", "-kernel", str(elf)]


@dataclass(frozen=True, slots=True)
class DeviceRun:
    """One firmware run: outputs by name, timer ticks in total and per layer, measured stack."""

    outputs: dict[str, np.ndarray]
    total_ticks: int
    layer_ticks: tuple[int, ...]
    stack_bytes: int
    wall_s: float
    stdout: str


@dataclass(frozen=True, slots=True)
class BatchRun:
    """One firmware run over N samples: per-sample outputs, the model's status per sample, timer
    ticks per sample (total [N] and per layer [N, L]) and the peak stack over the batch."""

    outputs: list[dict[str, np.ndarray]]
    status: np.ndarray
    total_ticks: np.ndarray
    layer_ticks: np.ndarray
    stack_bytes: int
    wall_s: float


class DeviceModel:
    """A firmware built by `build_firmware` in `out_dir`, run in QEMU on its emulated board."""

    def __init__(self, out_dir: str | Path, qemu: str = QEMU,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.out_dir = Path(out_dir)
        meta_path = self.out_dir / DEVICE_JSON
        self.elf = self.out_dir / FIRMWARE
        if not meta_path.exists() or not self.elf.exists():
            raise NncError(f"{self.out_dir}: no {FIRMWARE} with {DEVICE_JSON}; compile for a "
                           "Cortex-M target first")
        self.info: dict[str, Any] = json.loads(meta_path.read_text())
        board = self.info.get("board")
        if board not in BOARDS:
            raise NncError(f"{meta_path}: unknown board {board!r}; known boards: "
                           f"{', '.join(sorted(BOARDS))}")
        self.board = BOARDS[board]
        self.qemu = qemu
        self.timeout_s = timeout_s
        self.inputs: list[dict[str, Any]] = list(self.info["inputs"])
        self.outputs: list[dict[str, Any]] = list(self.info["outputs"])
        self.layers: list[dict[str, Any]] = list(self.info["layers"])

    @property
    def target(self) -> str:
        return str(self.info["target"])

    def ticks_to_instructions(self, ticks: int) -> int:
        return round(ticks * (1e9 / self.board.tick_hz) / NS_PER_INSTRUCTION)

    # ---- running

    def _check_inputs(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        known = [d["name"] for d in self.inputs]
        unknown = [n for n in inputs if n not in known]
        missing = [n for n in known if n not in inputs]
        if unknown or missing:
            raise NncError(f"inputs do not match the model: missing {missing}, unexpected "
                           f"{unknown}; the model's inputs are {known}")
        arrays = []
        for d in self.inputs:
            arr = np.asarray(inputs[d["name"]])
            if tuple(arr.shape) != tuple(d["shape"]) or str(arr.dtype) != d["dtype"]:
                raise NncError(f"input '{d['name']}' is {arr.dtype}{list(arr.shape)} but the "
                               f"model expects {d['dtype']}{list(d['shape'])}")
            arrays.append(np.ascontiguousarray(arr))
        return arrays

    def ram_to_run(self) -> dict[str, int]:
        """What the firmware needs of the board's RAM to run: its static data (the arena
        included), the input/output buffers main() allocates, and the stack (the compile-time
        estimate, at least check-fit's reserve): the sum the compile-time check makes."""
        fw = self.info.get("firmware", {})
        static = int(fw.get("static_ram_bytes", 0))
        io = sum(int(d["nbytes"]) for d in self.inputs + self.outputs)
        stack = max(int(fw.get("stack_bytes", 0)), STACK_RESERVE)
        return {"static": static, "arena": int(self.info.get("arena_bytes", 0)), "io": io,
                "stack": stack, "total": static + io + stack}

    def _check_fits_board(self) -> None:
        """NncError saying what does not fit when the firmware cannot run on the emulated board
        (built for a bigger part with --ram/--flash), before QEMU starts."""
        fw = self.info.get("firmware", {})
        flash = int(fw.get("flash_bytes", 0))
        b = self.board
        ram = self.ram_to_run()
        problems = []
        if flash > b.flash_bytes:
            problems.append(f"{flash:,} B of flash but the board has {b.flash_bytes:,} B")
        if ram["total"] > b.ram_bytes:
            problems.append(
                f"{ram['total']:,} B of RAM (static {ram['static']:,} B incl. the "
                f"{ram['arena']:,} B arena + inputs/outputs {ram['io']:,} B + stack "
                f"{ram['stack']:,} B) but the board has {b.ram_bytes:,} B")
        top = self.info.get("stack_top_address")
        if not problems and top is not None and top > b.ram_origin + b.ram_bytes:
            problems.append(f"its stack at the top of {top - b.ram_origin:,} B of RAM (static "
                            f"data + the linker's {STACK_REGION:,} B stack region exceed the "
                            f"board's {b.ram_bytes:,} B)")
        if problems:
            raise NncError(f"this firmware cannot run on the emulated {b.name}: it needs "
                           + "; and ".join(problems)
                           + "; it can be built for a bigger part but not run in QEMU")

    def execute(self, inputs: Mapping[str, Any] | None = None,
                timeout_s: float | None = None) -> DeviceRun:
        """Run the firmware once; inputs default to the firmware's pseudo-random data."""
        arrays = self._check_inputs(inputs) if inputs is not None else None
        self._check_fits_board()
        qemu = find_qemu(self.qemu)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        with tempfile.TemporaryDirectory(prefix="nnc_qemu_") as tmp:
            work = Path(tmp)
            for i, arr in enumerate(arrays or []):
                arr.astype(arr.dtype.newbyteorder("<"), copy=False).tofile(work / f"input{i}.bin")
            monitor = work / "monitor.sock"
            cmd = qemu_command(qemu, self.board, self.elf.resolve(), monitor)
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    text=True, errors="replace")
            try:
                stdout, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                layer = self._read_current_layer(monitor)
                proc.kill()
                proc.communicate()
                raise NncError(f"the firmware timed out after {timeout:g} s "
                               f"{self._where(layer)} on the emulated {self.board.name}") from None
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            wall = time.perf_counter() - start
            self._check_exit(proc.returncode, stdout)
            outputs = {}
            for i, d in enumerate(self.outputs):
                path = work / f"output{i}.bin"
                data = path.read_bytes() if path.exists() else b""
                if len(data) != d["nbytes"]:
                    raise NncError(f"the firmware wrote {len(data)} B for output '{d['name']}', "
                                   f"expected {d['nbytes']} B")
                dtype = np.dtype(d["dtype"]).newbyteorder("<")
                outputs[d["name"]] = (np.frombuffer(data, dtype).astype(d["dtype"])
                                      .reshape(d["shape"]))
        result = _RESULT.search(stdout)
        assert result is not None  # _check_exit made sure
        ticks = [0] * int(result[3])
        for m in _LAYER.finditer(stdout):
            ticks[int(m[1])] = int(m[2])
        return DeviceRun(outputs, int(result[2]), tuple(ticks), int(result[4]), wall, stdout)

    def execute_batch(self, samples: Sequence[Mapping[str, Any]],
                      progress: Callable[[int], None] | None = None,
                      timeout_s: float | None = None) -> BatchRun:
        """Run the firmware once over all `samples` (the model runs once per sample, in one QEMU
        start). `progress(done)` is called as samples finish; `timeout_s` (default: the
        model's) bounds each sample, not the whole batch."""
        if not samples:
            raise NncError("a batch needs at least one sample")
        arrays = [self._check_inputs(s) for s in samples]
        self._check_fits_board()
        qemu = find_qemu(self.qemu)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        n = len(arrays)
        sample_bytes = sum(int(d["nbytes"]) for d in self.inputs)
        out_bytes = sum(int(d["nbytes"]) for d in self.outputs)
        nlayers = len(self.layers)
        with tempfile.TemporaryDirectory(prefix="nnc_qemu_") as tmp:
            work = Path(tmp)
            with open(work / "batch.bin", "wb") as f:
                f.write(BATCH_MAGIC + struct.pack("<III", BATCH_VERSION, n, sample_bytes))
                for sample in arrays:
                    for arr in sample:
                        f.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
            monitor = work / "monitor.sock"
            cmd = qemu_command(qemu, self.board, self.elf.resolve(), monitor)
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    text=True, errors="replace")
            lines: queue.Queue[str | None] = queue.Queue()

            def read() -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.put(line)
                lines.put(None)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            stdout: list[str] = []
            try:
                while True:
                    try:
                        line = lines.get(timeout=timeout)
                    except queue.Empty:
                        layer = self._read_current_layer(monitor)
                        done = sum(1 for x in stdout if x.startswith("NNC_SAMPLE"))
                        raise NncError(f"the firmware timed out after {timeout:g} s on sample "
                                       f"{done} of {n} {self._where(layer)} on the emulated "
                                       f"{self.board.name}") from None
                    if line is None:
                        break
                    stdout.append(line)
                    m = _SAMPLE.match(line)
                    if m and progress is not None:
                        progress(int(m[1]) + 1)
                proc.wait(timeout=timeout)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                reader.join(timeout=5)
            wall = time.perf_counter() - start
            text = "".join(stdout)
            self._check_exit(proc.returncode, text)
            data = (work / "batch_out.bin").read_bytes()
            counts = np.fromfile(work / "batch_ticks.bin", "<u4")
        if len(data) != n * out_bytes or counts.size != n * (1 + nlayers):
            raise NncError(f"the firmware wrote {len(data)} B of outputs and {counts.size} "
                           f"counts for {n} samples, expected {n * out_bytes} B and "
                           f"{n * (1 + nlayers)}")
        status = np.zeros(n, np.int32)
        for m in _SAMPLE.finditer(text):
            status[int(m[1])] = int(m[2])
        outputs = []
        for k in range(n):
            pos, sample_out = k * out_bytes, {}
            for d in self.outputs:
                dtype = np.dtype(d["dtype"]).newbyteorder("<")
                chunk = data[pos:pos + int(d["nbytes"])]
                sample_out[d["name"]] = (np.frombuffer(chunk, dtype).astype(d["dtype"])
                                         .reshape(d["shape"]))
                pos += int(d["nbytes"])
            outputs.append(sample_out)
        counts = counts.reshape(n, 1 + nlayers).astype(np.int64)
        result = _RESULT.search(text)
        assert result is not None  # _check_exit made sure
        return BatchRun(outputs, status, counts[:, 0], counts[:, 1:], int(result[4]), wall)

    def _where(self, layer: int | None) -> str:
        if layer is None or layer < 0 or layer >= len(self.layers):
            return "outside the model's layers" if layer is not None else "(layer unknown)"
        lay = self.layers[layer]
        return f"in layer {layer} ({lay['op']} {lay['name']!r})"

    def _check_exit(self, rc: int, stdout: str) -> None:
        fault = _FAULT.search(stdout)
        if fault:
            raise NncError(f"the firmware crashed with a {fault[1]} {self._where(int(fault[2]))} "
                           f"at pc={fault[3]} on the emulated {self.board.name}")
        error = _ERROR.search(stdout)
        if error:
            raise NncError(f"the firmware reported an error: {error[1]}")
        result = _RESULT.search(stdout)
        if rc != 0 or result is None or "NNC_END" not in stdout:
            tail = " | ".join(stdout.strip().splitlines()[-3:])
            status = f" (model status {result[1]})" if result else ""
            raise NncError(f"the firmware failed on the emulated {self.board.name}: QEMU exit "
                           f"code {rc}{status}; last output: {tail or 'none'}")

    def _read_current_layer(self, monitor: Path) -> int | None:
        """nnc_current_layer of a running (hung) firmware, through QEMU's monitor."""
        addr = self.info.get("current_layer_address")
        if addr is None or not monitor.exists():
            return None
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2.0)
                s.connect(str(monitor))
                s.sendall(f"xp /1wx {addr:#x}\n".encode())
                reply = b""
                deadline = time.monotonic() + 2.0
                pattern = re.compile(rb"%x:\s+0x([0-9a-f]+)" % addr)
                while time.monotonic() < deadline:
                    reply += s.recv(4096)
                    m = pattern.search(reply)
                    if m:
                        value = int(m.group(1), 16)
                        return value - (1 << 32) if value >= 1 << 31 else value
        except OSError:
            return None
        return None

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run once on the emulated board; returns {output name: array}."""
        return self.execute(inputs).outputs

    __call__ = run

    def benchmark(self, inputs: Mapping[str, Any] | None = None,
                  timeout_s: float | None = None) -> dict[str, Any]:
        """Instruction counts (whole model and per layer), RAM and flash of one run. RAM =
        arena + stack, the stack measured on the board (the high-water mark of the stack
        painted before the run: the model's, the kernel library's and the driver's frames);
        `stack_estimate_bytes` is the compile-time estimate."""
        r = self.execute(inputs, timeout_s)
        fw = self.info.get("firmware", {})
        macs = int(self.info["macs"])
        instructions = self.ticks_to_instructions(r.total_ticks)
        layers = []
        for lay, ticks in zip(self.layers, r.layer_ticks, strict=False):
            n = self.ticks_to_instructions(ticks)
            layers.append({"name": lay["name"], "op": lay["op"], "kernel": lay["kernel"],
                           "instructions": n, "macs": lay["macs"],
                           "instructions_per_mac": round(n / lay["macs"], 3) if lay["macs"]
                           else None})
        estimate = int(fw.get("stack_bytes", 0))
        stack = r.stack_bytes if r.stack_bytes > 0 else estimate  # measured when the board can
        arena = int(self.info["arena_bytes"])
        scratch = int(self.info.get("library_scratch_bytes", 0))  # inside the arena
        return {
            "target": self.target,
            "board": self.board.name,
            "note": COUNT_NOTE,
            "instructions": instructions,
            "instructions_per_mac": round(instructions / macs, 3) if macs else None,
            "macs": macs,
            "ram_bytes": arena + stack,
            "arena_bytes": arena,
            "scratch_bytes": scratch,
            "stack_bytes": stack,
            "stack_source": "measured" if r.stack_bytes > 0 else "estimate",
            "stack_measured_bytes": r.stack_bytes,
            "stack_estimate_bytes": estimate,
            "static_ram_bytes": int(fw.get("static_ram_bytes", 0)),
            "flash_bytes": int(fw.get("flash_bytes", 0)),
            "weight_bytes": int(self.info.get("weight_bytes", 0)),
            "ticks": r.total_ticks,
            "tick_hz": self.board.tick_hz,
            "emulator_wall_s": round(r.wall_s, 3),
            "layers": layers,
        }
