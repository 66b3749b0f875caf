"""The README's custom-pass example runs as written."""

import re
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, save_model

README = Path(__file__).resolve().parents[1] / "README.md"


def test_custom_pass_example(tmp_path, monkeypatch):
    block = re.search(r"```python custom-pass\n(.*?)```", README.read_text(), re.S)
    assert block, "README lost its custom-pass example"
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
         helper.make_node("Exp", ["b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]),
               str(tmp_path / "model.onnx"))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)
    model = scope["model"]
    assert model.info["pipeline"].startswith("drop-double-relu,")
    # with the pass, one relu remains; without it the kernel would be "relu+relu+exp"
    assert [layer["op"] for layer in model.info["layers"]] == ["relu+exp"]
    x = np.array([-1, 0, 2, -3], np.float32)
    np.testing.assert_allclose(model.run({"x": x})["y"], np.exp(np.maximum(x, 0)), rtol=1e-6)
