"""benchmarks/bench_tables.py: README tables from a pytest-benchmark JSON, and an instruction
increase between two runs is a failure."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from benchmarks.bench_tables import compare, main, tables


def run_json() -> dict:
    device = {"fullname": "benchmarks/test_benchmarks.py::test_device[kws-cortex-m7-fp32]",
              "group": "cortex-m7/kws", "stats": {"median": 0.3, "min": 0.3, "rounds": 1},
              "extra_info": {"model": "kws", "target": "cortex-m7", "engine": "nnc fp32",
                             "instructions": 1000, "instructions_per_mac": 4.3,
                             "ram_bytes": 64836, "stack_bytes": 836, "flash_bytes": 150892}}
    host = {"fullname": "benchmarks/test_benchmarks.py::test_host_nnc[kws-host]",
            "group": "host/kws", "stats": {"median": 1.5e-4, "min": 1.2e-4, "rounds": 900},
            "extra_info": {"model": "kws", "target": "host", "engine": "nnc",
                           "max_abs_diff_vs_ort": 8.9e-8}}
    return {"benchmarks": [device, host]}


def test_tables() -> None:
    text = tables(run_json()["benchmarks"])
    assert "| kws | host | nnc | 0.1500 | 0.1200 | 900 | 8.9e-08 |" in text
    assert "| kws | cortex-m7 | nnc fp32 | 1,000 | 4.3 | 64,836 | 836 | 150,892 | 0.30 |" in text


def test_compare_flags_more_instructions(tmp_path: Path) -> None:
    old, new = run_json(), run_json()
    assert compare(old["benchmarks"], new["benchmarks"])[1] is False
    slower = copy.deepcopy(new)
    slower["benchmarks"][0]["extra_info"]["instructions"] = 1100
    text, worse = compare(old["benchmarks"], slower["benchmarks"])
    assert worse and "1,000 -> 1,100 (+10.00%)  REGRESSION" in text
    (tmp_path / "a.json").write_text(json.dumps(old))
    (tmp_path / "b.json").write_text(json.dumps(slower))
    assert main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert main([str(tmp_path / "a.json")]) == 0
