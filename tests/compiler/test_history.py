"""The measurement history: schema migration, concurrent writers, the CLI's records, and
regressions between the last two comparable runs."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.compiler.cli import main
from nnc.compiler.errors import NncError
from nnc.compiler.history import MIGRATIONS, SCHEMA_VERSION, History, Run, default_path, regressions

from .test_eval import W, classifier


def run(value: float, key: str = "instructions", **options: object) -> Run:
    return Run("bench", "m", "abc123", "cortex-m7", "fp32", dict(options), {key: value}, key,
               value, True, [{"name": "l0", "instructions": value}])


def test_default_path_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NNC_HISTORY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_path() == tmp_path / "nnc" / "history.sqlite"
    monkeypatch.setenv("NNC_HISTORY", "off")
    assert default_path() is None and History.open() is None
    monkeypatch.setenv("NNC_HISTORY", str(tmp_path / "h.db"))
    assert default_path() == tmp_path / "h.db"


def test_record_and_read_back(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite") as h:
        assert h.version() == SCHEMA_VERSION
        ids = [h.record(run(1000 + i, opt_level=3)) for i in range(3)]
        runs = h.runs(model="m", target="cortex-m7", layers=True)
        assert [r.id for r in runs] == ids and runs[-1].key_value == 1002
        assert runs[0].layers == [{"name": "l0", "instructions": 1000}]
        assert h.runs(model="abc")[0].id == ids[0]  # a hash prefix selects too
        assert h.runs(target="host") == []


def test_migrates_a_version_1_file(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "PRAGMA user_version=1;")
    db.execute("INSERT INTO runs (time, kind, model, model_hash, target, options, nnc_version, "
               "figures) VALUES ('2026-01-01T00:00:00', 'bench', 'old', 'ff', 'host', '{}', "
               "'0.0.1', '{}')")
    db.commit()
    db.close()
    with History(path) as h:
        assert h.version() == SCHEMA_VERSION
        old, = h.runs(model="old")
        assert old.scheme == "fp32" and old.nnc_version == "0.0.1"
        h.record(run(5.0))
        assert len(h.runs()) == 2
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(NncError, match="newer than this nnc"):
        History(path)


def test_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "junk").write_text("not sqlite at all " * 100)
    with pytest.raises(NncError, match="junk.*--history"):
        History(tmp_path / "junk")


WRITER = """
import sys
from nnc.compiler.history import History, Run
with History(sys.argv[1]) as h:
    for i in range(25):
        h.record(Run("bench", "m", "h", "host", "fp32", {}, {}, "latency_ms", float(i)))
"""


def test_two_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path)]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with History(path) as h:
        assert len(h.runs()) == 50 and len({r.id for r in h.runs()}) == 50


def test_regression_rules() -> None:
    runs = [run(1000, opt_level=3), run(1000, opt_level=3)]
    assert regressions(runs) == []
    slower = run(1500, opt_level=0)
    runs[1].id, slower.id = 2, 3
    reg, = regressions([*runs, slower])
    text = reg.describe()
    assert "1,000 -> 1,500 (+50.0% worse)" in text and "opt_level 3 -> 0" in text
    assert regressions([run(1000), run(990)]) == []  # faster is fine
    lat = [run(1.0, "latency_ms"), run(1.05, "latency_ms")]
    assert regressions(lat) == []  # host latency within its 10% noise
    assert len(regressions([*lat, run(1.5, "latency_ms")])) == 1
    other = run(5000)
    other.target = "cortex-m4"  # not comparable with the M7 runs
    assert regressions([run(1000), other]) == []


def test_ten_benches_and_a_slower_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    hist = tmp_path / "h.sqlite"
    model = tmp_path / "tinycls.onnx"
    onnx.save(classifier(), model)
    nnc.compile(model, output_dir=tmp_path / "o3")
    for _ in range(10):
        assert main(["bench", str(tmp_path / "o3"), "--repeat", "5", "--warmup", "1",
                     "--history", str(hist)]) == 0
    capsys.readouterr()
    assert main(["history", "--history", str(hist), "--model", "tinycls"]) == 0
    out = capsys.readouterr().out
    # 10 rows (host latency on a busy machine may flag one: the rule is tested above)
    assert len([line for line in out.splitlines() if line[:1].isdigit()]) == 10
    assert main(["history", "--history", str(hist), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert runs[0]["options"]["opt_level"] == 3 and runs[0]["model_hash"] == \
        History(hist).runs()[0].model_hash


def _bigger_model() -> onnx.ModelProto:
    """Enough work that -O0 is clearly slower than -O3 on the board."""
    import numpy as np

    w = np.tile(W, (8, 8))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.needs_arm
@pytest.mark.needs_qemu
def test_slower_device_build_is_flagged(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("needs gcc-arm-none-eabi and qemu-system-arm")
    hist = tmp_path / "h.sqlite"
    model = tmp_path / "mm.onnx"
    onnx.save(_bigger_model(), model)
    for level in (3, 3, 0):
        nnc.compile(model, target="cortex-m7", output_dir=tmp_path / "fw", opt_level=level)
        assert main(["bench", str(tmp_path / "fw"), "--history", str(hist)]) == 0
    capsys.readouterr()
    assert main(["history", "--history", str(hist), "--fail-on-regression"]) == 3
    out = capsys.readouterr().out
    assert "REGRESSION mm on cortex-m7" in out and "opt_level 3 -> 0" in out
    assert out.count("REGRESSION") == 1


def test_history_of_nothing_creates_nothing(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.sqlite"
    assert main(["history", "--history", str(missing)]) == 2
    assert "no history at" in capsys.readouterr().err and not missing.exists()


def test_json_listing_stays_json_with_a_regression(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`nnc history --json` prints one JSON document even when a run is flagged (the flag goes
    with the run); the text listing prints the regression line."""
    hist = tmp_path / "h.sqlite"
    with History(hist) as h:
        for value in (1000.0, 1000.0, 1500.0):
            h.record(Run("bench", "m", "hh", "cortex-m7", "int8", {}, {}, "instructions", value))
    assert main(["history", "--history", str(hist), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["regression"] is not None for r in runs] == [False, False, True]
    assert main(["history", "--history", str(hist)]) == 0
    assert "instructions 1,000 -> 1,500 (+50.0% worse)" in capsys.readouterr().out


def test_history_off_on_the_command_line_writes_no_file_called_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--history off` records nothing (it wrote a database named `off` in the working folder
    before), as NNC_HISTORY=off does; `nnc history --history off` says the history is off."""
    monkeypatch.chdir(tmp_path)
    assert History.open("off") is None and History.open("OFF") is None
    assert main(["history", "--history", "off"]) == 2
    assert "the history is off" in capsys.readouterr().err
    assert not (tmp_path / "off").exists()
    h = History.open("./off")  # a file called off, asked for by its path
    assert h is not None
    h.close()
    assert (tmp_path / "off").exists()
