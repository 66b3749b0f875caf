"""nnc: a deep-learning compiler from ONNX to C (hosts, Cortex-M microcontrollers).

    >>> import nnc
    >>> model = nnc.compile("model.onnx", target="host")      # doctest: +SKIP
    >>> outputs = model.run({"input": x})                      # doctest: +SKIP
"""

from typing import Any

__all__ = ["compile", "CompiledModel", "NncError", "evaluate", "tune"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:  # lazy, so `import nnc.ir` does not pull in the compiler
    if name == "evaluate":
        from nnc.compiler.eval import evaluate

        return evaluate
    if name == "tune":
        from nnc.compiler.tune.tuner import tune

        return tune
    if name in __all__:
        from nnc.compiler import api

        return getattr(api, name)
    raise AttributeError(name)
