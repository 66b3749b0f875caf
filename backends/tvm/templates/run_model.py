"""Run this folder's model.so with the TVM runtime alone (no nnc): `python run_model.py
[inputs.npz]`. nnc.json names the inputs and outputs and sizes the workspace; weights.bin holds
the constants. The entry is main(inputs..., outputs..., workspace, weights), all flat tensors."""

import json
import sys
from pathlib import Path

import numpy as np
import tvm.runtime

HERE = Path(__file__).resolve().parent


def load(folder=HERE):
    info = json.loads((Path(folder) / "nnc.json").read_text())
    module = tvm.runtime.load_module(str(Path(folder) / info["tvm"]["library"]))
    weights = np.fromfile(Path(folder) / info["tvm"]["weights"], np.uint8)
    weights = tvm.runtime.tensor(weights if weights.size else np.zeros(1, np.uint8))
    workspace = tvm.runtime.empty((info["tvm"]["workspace_bytes"],), "uint8")

    def run(inputs):
        ins = [tvm.runtime.tensor(np.ascontiguousarray(inputs[d["name"]], d["dtype"]).reshape(-1))
               for d in info["inputs"]]
        outs = [tvm.runtime.empty((max(int(np.prod(d["shape"])), 1),), d["dtype"])
                for d in info["outputs"]]
        module[info["tvm"]["entry"]](*ins, *outs, workspace, weights)
        return {d["name"]: o.numpy()[: int(np.prod(d["shape"]))].reshape(d["shape"])
                for d, o in zip(info["outputs"], outs, strict=True)}

    return info, run


if __name__ == "__main__":
    info, run = load()
    if len(sys.argv) > 1:
        with np.load(sys.argv[1]) as f:
            feeds = {k: f[k] for k in f.files}
    else:
        rng = np.random.default_rng(0)
        feeds = {d["name"]: rng.standard_normal(d["shape"]).astype(d["dtype"])
                 for d in info["inputs"]}
    outputs = run(feeds)
    if len(sys.argv) > 2:
        np.savez(sys.argv[2], **outputs)
    for name, arr in outputs.items():
        print(f"{name}: {arr.dtype}{list(arr.shape)} {arr.reshape(-1)[:8]}")
