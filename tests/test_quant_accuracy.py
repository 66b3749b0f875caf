"""The int8 accuracy bar of issue 4: on each MLPerf Tiny model, nnc's int8 output SQNR vs the
float model is >= what onnxruntime's quantize_static (QDQ, per-channel, int8, same calibration
samples and method) reaches, minus 1 dB; both computed here, in the same run.

nnc's quantized graph runs in the graph interpreter (bit-exact with the compiled host model, see
test_quantize_e2e.py). 256 evaluation samples: the SQNR of a softmax output over a few samples
moves by 1-1.5 dB from one evaluation set to the next (measured over seeds at 64 samples), too
much to resolve a 1 dB bar with 8.

All three calibration methods on all four models (~1 minute on two cores): percentile is
onnxruntime's |x| definition on both sides, and entropy's KL search only considers thresholds
whose expected squared error is no worse than the data range's (see passes/calibrate.py), so
neither clips its way below onnxruntime's figures.
"""

from __future__ import annotations

import pytest

from benchmarks.models import MODELS
from benchmarks.quant_accuracy import BAR_DB, measure
from nnc.passes.calibrate import METHODS

CALIBRATION = 16
EVALUATION = 256
CASES = [(name, method) for name in sorted(MODELS) for method in METHODS]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "method"), CASES)
def test_int8_sqnr_within_1db_of_onnxruntime(name: str, method: str) -> None:
    r = measure(name, method, CALIBRATION, EVALUATION, engine="interp")
    print(f"{name} {method}: nnc {r.nnc_db} dB, onnxruntime {r.ort_db} dB "
          f"(plain {r.ort_plain_db}, pre-processed {r.ort_preprocessed_db})")
    assert r.nnc_db > 20.0  # a broken quantizer cannot pass by onnxruntime failing too
    assert r.nnc_db >= r.ort_db - BAR_DB, r
