"""Looking after a tuning cache: `nnc cache prune|export|import` and their Python equivalents
(nnc.compiler.tune.cache `prune`, `export_cache`, `import_cache`), and the logged fallback to a
record of the same ISA family when no record is for the exact target."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from nnc.compiler.cli import main
from nnc.compiler.tune.cache import (
    CacheError,
    CacheLookup,
    Trial,
    TuningCache,
    export_cache,
    import_cache,
    nnc_version,
    prune,
)

M7 = "target=cortex-m7 isa=dsp/32 features=dsp,fpu-dp"
M4 = "target=cortex-m4 isa=dsp/32 features=dsp,fpu-sp"
M55 = "target=cortex-m55 isa=mve/128 features=dsp,fpu-dp,mve,mve-fp"
OBJ = "qemu-instructions"


def conv(target: str) -> str:
    return f"conv_s8(s8[1,8,8,8], s8[8,3,3,8] const) -> (s8[1,8,8,8]) conv{{}} {target}"


def filled(path) -> TuningCache:
    c = TuningCache.open(path)
    w = conv(M7)
    c.add(Trial(w, M7, OBJ, "[]", 100.0, is_default=True))
    c.add(Trial(w, M7, OBJ, "[A]", 80.0, features=[1.0, 2.0]))
    c.add(Trial(w, M7, OBJ, "[B]", 90.0))
    c.add(Trial(w, M7, OBJ, "[C]", 70.0))
    c.add(Trial(w, M7, OBJ, "[D]", None, "failed", "build: error"))
    c.add(Trial(w, M7, OBJ, "[E]", None, "wrong", "outputs differ"))
    c.add(Trial(w, M7, OBJ, "[F]", 60.0, nnc_version="0.0.1"))
    return c


def test_prune_failed_superseded_and_other_versions(tmp_path):
    with filled(tmp_path / "c.sqlite") as c:
        assert prune(c, dry_run=True).failed == 2 and c.count() == 7
        rep = prune(c)  # the default: failed and wrong only
        assert (rep.failed, rep.superseded, rep.kept) == (2, 0, 5)
        assert {t.status for t in c.trials()} == {"ok"}
        rep = prune(c, failed=False, superseded=True, keep=2)
        # ok: F 60 (old version), C 70, A 80, B 90, default 100: F, C kept, default kept
        assert rep.superseded == 2
        assert sorted(t.steps for t in c.trials()) == ["[C]", "[F]", "[]"]
        rep = prune(c, failed=False, other_versions=True)
        assert rep.other_versions == 1 and all(t.nnc_version == nnc_version()
                                               for t in c.trials())
        assert c.best(conv(M7), M7, OBJ).steps == "[C]"
        with pytest.raises(CacheError, match="keep at least 1"):
            prune(c, superseded=True, keep=0)


def test_export_import_round_trip_merges_once(tmp_path):
    with filled(tmp_path / "a.sqlite") as a:
        assert export_cache(a, tmp_path / "a.json") == 7
        assert export_cache(a, tmp_path / "copy.sqlite") == 7
        assert export_cache(a, tmp_path / "none.json", workload="zzzz") == 0
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["format"] == "nnc-tuning-export" and len(doc["trials"]) == 7
    with TuningCache.open(tmp_path / "b.sqlite") as b:
        b.add(Trial(conv(M4), M4, OBJ, "[G]", 50.0))
        assert import_cache(b, tmp_path / "a.json") == (7, 0)
        assert import_cache(b, tmp_path / "a.json") == (0, 7)  # merging twice adds nothing
        assert import_cache(b, tmp_path / "copy.sqlite") == (0, 7)
        assert b.count() == 8
        assert b.best(conv(M7), M7, OBJ).steps == "[F]"
        a_ = next(t for t in b.trials() if t.steps == "[A]")
        assert a_.features == [1.0, 2.0] and a_.status == "ok"
        assert next(t for t in b.trials() if t.steps == "[D]").error == "build: error"


def test_foreign_or_corrupt_imports_are_refused_and_merge_nothing(tmp_path):
    with filled(tmp_path / "a.sqlite") as a:
        export_cache(a, tmp_path / "a.json")
    doc = json.loads((tmp_path / "a.json").read_text())
    doc["trials"][5]["status"] = "great"  # one bad record: nothing of the file goes in
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"format": "autotvm-log", "trials": []}))
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**doc, "schema_version": 7}))
    junk = tmp_path / "junk.json"
    junk.write_bytes(b"\x00\xffnot json")
    other_db = tmp_path / "other.sqlite"
    con = sqlite3.connect(other_db)
    con.execute("CREATE TABLE t (a)")
    con.commit()
    con.close()
    with TuningCache.open(tmp_path / "b.sqlite") as b:
        for path, message in [(bad, "trial 5 is malformed"), (foreign, "not an nnc tuning export"),
                              (newer, "schema version 7"), (junk, "neither an nnc tuning export"),
                              (other_db, "not an nnc tuning cache"),
                              (tmp_path / "missing.json", "no such file")]:
            with pytest.raises(CacheError, match=message):
                import_cache(b, path)
        assert b.count() == 0


def test_cache_cli_prune_export_import(tmp_path, capsys):
    filled(tmp_path / "a.sqlite").close()
    a, b, out = str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite"), str(tmp_path / "a.json")
    assert main(["cache", "prune", "--cache", a, "--dry-run"]) == 0
    assert "would drop 2 trials (2 failed or wrong" in capsys.readouterr().out
    assert main(["cache", "export", out, "--cache", a]) == 0
    assert "7 trials exported" in capsys.readouterr().out
    assert main(["cache", "import", out, "--cache", b]) == 0
    assert "7 trials imported" in capsys.readouterr().out
    assert main(["cache", "prune", "--superseded", "--failed", "--cache", b]) == 0
    assert "dropped 5 trials (2 failed or wrong, 3 superseded" in capsys.readouterr().out
    with TuningCache.open(b, create=False) as c:
        assert sorted(t.steps for t in c.trials()) == ["[F]", "[]"]
    (tmp_path / "junk.json").write_text("{")
    for argv, message in [(["cache", "import", str(tmp_path / "junk.json"), "--cache", b],
                           "neither an nnc tuning export"),
                          (["cache", "export", "--cache", a], "needs a file"),
                          (["cache", "prune", "--keep", "2", "--cache", a], "goes with"),
                          (["cache", "export", str(tmp_path / "no" / "x.json"), "--cache", a],
                           "does not exist")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_isa_family_fallback_is_explicit_and_logged(tmp_path, caplog):
    with TuningCache.open(tmp_path / "c.sqlite") as c:
        c.add(Trial(conv(M4), M4, OBJ, "[]", 30.0))
        c.add(Trial(conv(M4), M4, OBJ, "[Split(loop='oc', factor=4)]", 20.0))
        c.add(Trial(conv(M4), M4, "host-ns", "[]", 1.0))
        exact = CacheLookup(c, M7, OBJ)
        with caplog.at_level(logging.WARNING, logger="nnc.tune"):
            steps = exact[conv(M7)]
        assert len(steps) == 1 and type(steps[0]).__name__ == "Split"
        assert exact.fallbacks == [(conv(M7), M4)]
        assert "using the one measured on cortex-m4 (same ISA family dsp/32)" in caplog.text
        # the M55 is another family; switched off: no record
        with pytest.raises(KeyError):
            CacheLookup(c, M55, OBJ)[conv(M55)]
        with pytest.raises(KeyError):
            CacheLookup(c, M7, OBJ, family_fallback=False)[conv(M7)]
        # an exact record wins over the family's, with no log line
        c.add(Trial(conv(M7), M7, OBJ, "[]", 25.0))
        caplog.clear()
        exact = CacheLookup(c, M7, OBJ)
        with caplog.at_level(logging.WARNING, logger="nnc.tune"):
            assert exact[conv(M7)] == ()
        assert exact.fallbacks == [] and not caplog.text
