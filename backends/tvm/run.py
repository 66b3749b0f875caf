"""Run a built TVM model from Python with the TVM runtime: `TVMModel(out_dir)`.

    >>> model = TVMModel("out/")                               # doctest: +SKIP
    >>> y = model.run({"x": x})["y"]                           # doctest: +SKIP
    >>> model.benchmark(warmup=10, repeat=100)["latency_ms"]   # doctest: +SKIP

Latency comes from TVM's own `time_evaluator` (the module's entry timed in C++, no Python in the
loop). Only `tvm.runtime` is used, as in the folder's run_model.py.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nnc.backends.tvm.build import INSTALL, LIBRARY, WEIGHTS
from nnc.errors import NncError


class TVMModel:
    def __init__(self, out_dir: str | Path, info: Mapping[str, Any] | None = None) -> None:
        try:
            import tvm.runtime as rt
        except ImportError as e:
            raise NncError(f"running a tvm-target model needs Apache TVM ({e}); install it "
                           f"with `{INSTALL}`") from None
        self.rt = rt
        self.out_dir = Path(out_dir)
        self.info = dict(info) if info is not None else json.loads(
            (self.out_dir / "nnc.json").read_text())
        meta = self.info["tvm"]
        lib = self.out_dir / LIBRARY
        if not lib.exists():
            raise NncError(f"{lib} not found; compile again with --target tvm")
        self.module = rt.load_module(str(lib))
        self.main = self.module[meta["entry"]]
        blob = np.fromfile(self.out_dir / WEIGHTS, np.uint8)
        if blob.size != meta["weights_bytes"]:
            raise NncError(f"{self.out_dir / WEIGHTS}: {blob.size} bytes, the model expects "
                           f"{meta['weights_bytes']}; compile again")
        self.weights = rt.tensor(blob if blob.size else np.zeros(1, np.uint8))
        self.workspace = rt.empty((meta["workspace_bytes"],), "uint8")

    def _args(self, inputs: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
        ins = [self.rt.tensor(np.ascontiguousarray(inputs[d["name"]]).reshape(-1)
                              if np.asarray(inputs[d["name"]]).size else
                              np.zeros(1, d["dtype"]))
               for d in self.info["inputs"]]
        outs = [self.rt.empty((max(int(np.prod(d["shape"])), 1),), d["dtype"])
                for d in self.info["outputs"]]
        return ins, outs

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        ins, outs = self._args(inputs)
        self.main(*ins, *outs, self.workspace, self.weights)
        return {d["name"]: o.numpy()[: int(np.prod(d["shape"]))].reshape(d["shape"])
                for d, o in zip(self.info["outputs"], outs, strict=True)}

    def benchmark(self, warmup: int = 10, repeat: int = 100,
                  inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if inputs is None:
            rng = np.random.default_rng(0)
            inputs = {d["name"]: (rng.standard_normal(d["shape"]) if "float" in d["dtype"]
                                  else rng.integers(0, 10, d["shape"])).astype(d["dtype"])
                      for d in self.info["inputs"]}
        ins, outs = self._args(inputs)
        args = (*ins, *outs, self.workspace, self.weights)
        for _ in range(max(warmup, 0)):
            self.main(*args)
        timer = self.module.time_evaluator(self.info["tvm"]["entry"], self.rt.cpu(0), number=1,
                                           repeat=max(repeat, 1), min_repeat_ms=0)
        times = [t * 1e3 for t in timer(*args).results]
        return {"latency_ms": {"median": statistics.median(times), "min": min(times),
                               "max": max(times), "mean": statistics.fmean(times)},
                "warmup": warmup, "repeat": repeat, "timer": "tvm time_evaluator",
                "arena_bytes": self.info.get("arena_bytes"),
                "workspace_bytes": self.info["tvm"]["workspace_bytes"]}
