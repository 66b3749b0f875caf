"""The HTML report: every section from a compiled model, its bench / eval history and its int8
accuracy report; the memory timeline's data; the CLI; and a real headless Chromium rendering it
with no console message (skipped without Debian's `chromium`), a screenshot kept in
build/test-artifacts/ ($NNC_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

import nnc
from nnc.compiler.cli import main
from nnc.compiler.report_html import build_report, write_report

from .test_eval import classifier

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("NNC_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium "
                                    "(apt-get install chromium)")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(an int8 host build with its accuracy report, a history with 2 benches and 1 eval)."""
    tmp = tmp_path_factory.mktemp("report")
    model = tmp / "tinycls.onnx"
    onnx.save(classifier(), model)
    data = tmp / "data.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((20, 1, 16)).astype(np.float32))
    out = tmp / "out"
    nnc.compile(model, output_dir=out, quantize="int8", calibration=data, report=True)
    hist = tmp / "h.sqlite"
    for _ in range(2):
        assert main(["bench", str(out), "--repeat", "5", "--warmup", "1", "--history",
                     str(hist)]) == 0
    assert main(["eval", str(model), "--data", str(data), "--quantize", "int8",
                 "--calibration", str(data), "-q", "--history", str(hist)]) == 0
    return out, hist


def test_every_section(compiled: tuple[Path, Path]) -> None:
    out, hist = compiled
    text = build_report(out, history=hist)
    for section in ("Summary", "Layers", "Memory", "int8 accuracy", "Evaluation", "History"):
        assert f"<h2>{section}</h2>" in text, section
    assert "host-int8" in text and "latency median" in text and "peak " in text
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)  # self-contained
    assert text.count("<svg") >= 4


def test_memory_plan_is_a_valid_placement(compiled: tuple[Path, Path]) -> None:
    info = nnc.CompiledModel.load(compiled[0]).info
    plan = info["memory_plan"]
    assert plan and all(p["offset"] + p["bytes"] <= info["arena_bytes"] for p in plan)
    for a in plan:  # slots live at the same time never share bytes
        for b in plan:
            if a is not b and a["first"] <= b["last"] and b["first"] <= a["last"]:
                assert (a["offset"] + a["bytes"] <= b["offset"]
                        or b["offset"] + b["bytes"] <= a["offset"]), (a, b)


def test_cli(compiled: tuple[Path, Path], tmp_path: Path,
             capsys: pytest.CaptureFixture[str]) -> None:
    out, hist = compiled
    assert main(["report", str(out), "-o", str(tmp_path / "r.html"), "--history", str(hist),
                 "--no-bench"]) == 0
    assert "<h2>History</h2>" in (tmp_path / "r.html").read_text()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a compiled nnc model" in capsys.readouterr().err
    model = tmp_path / "m.onnx"
    onnx.save(classifier(), model)
    assert main(["compile", str(model), "-o", str(tmp_path / "o"), "--report-html"]) == 0
    text = (tmp_path / "o" / "report.html").read_text()
    assert "<h2>Memory</h2>" in text and "<h2>History</h2>" not in text  # no history yet


def render(html_file: Path, png: Path, tmp: Path) -> list[str]:
    """Chromium's console messages for the page (the report has no script: any message is
    an error, e.g. a blocked load or a CSP violation); writes its screenshot to `png`."""
    assert CHROMIUM is not None
    proc = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
         "--window-size=1100,1600", f"--screenshot={png}", html_file.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp)})
    assert png.exists() and png.stat().st_size > 5000, proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


@needs_chromium
def test_chromium_renders_without_console_messages(compiled: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    out, hist = compiled
    page = write_report(out, tmp_path / "report.html", history=hist, bench=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert render(page, ARTIFACTS / "report_tinycls.png", tmp_path) == []
    # the check can fail: a page that logs an error and loads a remote image is caught
    bad = tmp_path / "bad.html"
    bad.write_text(page.read_text().replace(
        "</body>", '<img src="https://example.invalid/x.png"><script>console.error("boom")'
        "</script></body>"))
    assert render(bad, tmp_path / "bad.png", tmp_path)


VWW = ROOT / "benchmarks" / "models" / "vww.onnx"


@needs_chromium
@pytest.mark.needs_arm
@pytest.mark.needs_qemu
@pytest.mark.skipif(not VWW.exists(), reason="python -m benchmarks.models.mlperf_tiny "
                    "benchmarks/models builds vww.onnx")
def test_vww_report_size_and_render(tmp_path: Path) -> None:
    if not shutil.which("arm-none-eabi-gcc"):
        pytest.skip("needs gcc-arm-none-eabi")
    out = tmp_path / "vww"
    nnc.compile(VWW, target="cortex-m7", output_dir=out, quantize="int8",
                calibration="random", report=True)
    page = write_report(out)  # one run on the emulated board: the layer chart in instructions
    assert page.stat().st_size <= 2 * 1024 * 1024
    text = page.read_text()
    assert "instructions (emulated)" in text and "<h2>int8 accuracy</h2>" in text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert render(page, ARTIFACTS / "report_vww.png", tmp_path) == []


def test_tuning_section_from_a_tune_run(compiled: tuple[Path, Path], tmp_path: Path) -> None:
    """A `nnc tune` run in the history (what `_cmd_tune` records) shows as a Tuning section:
    each workload's best-so-far curve and the summary. The TuneResult is made by hand here; the
    real one is recorded by tests/test_tune_cortex_m.py's CLI run."""
    import json

    from nnc.compiler.history import History, Run
    from nnc.compiler.tune.tuner import TuneResult, WorkloadResult

    out, _ = compiled
    info = json.loads((out / "nnc.json").read_text())
    result = TuneResult([WorkloadResult("conv_s8(...)", "abc123def456", "conv_s8", ["c1", "c2"],
                                        1000.0, 700.0, "()", 5, history=[990, 800, 900, 700,
                                                                          750])],
                        tmp_path / "t.sqlite", info["target"], "qemu-instructions", 6, 12.0,
                        5000, 4400)
    hist = tmp_path / "h.sqlite"
    with History(hist) as h:
        h.record(Run.from_tune(result, "tinycls", info["model"]["sha256"], "int8", {}))
    text = build_report(out, history=hist)
    assert "<h2>Tuning</h2>" in text and "abc123def456" in text and "1.43x" in text
    assert "trial by trial" in text
