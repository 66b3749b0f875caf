"""A local history of every measurement: `nnc bench` and `nnc eval` append one run each to a
SQLite file, `nnc history` lists them and flags regressions.

    >>> h = History.open()                                  # doctest: +SKIP
    >>> h.record(Run.from_bench(model_info, result))        # doctest: +SKIP
    >>> h.runs(model="kws", target="cortex-m7")             # doctest: +SKIP

Where: `--history FILE`, else $NNC_HISTORY (`off` turns recording off), else
`$XDG_DATA_HOME/nnc/history.sqlite` (`~/.local/share/nnc/...` without XDG_DATA_HOME).

Schema (`PRAGMA user_version` holds its version; `MIGRATIONS[i]` takes version i to i + 1 and
runs when an older file is opened): `runs` (one row per bench / eval / tune: time, kind, model
name and SHA-256 of the ONNX file, target, scheme, options, nnc version, the whole-run figures as
JSON, and the key figure a regression is judged on) and `layers` (per-layer figures of a run).
Two processes may write at once: the file is in WAL mode, every write is one `BEGIN IMMEDIATE`
transaction, and a writer waits up to `BUSY_TIMEOUT_S` for the other.

Comparable runs: same kind, model hash, target and scheme (fp32 / int8). Build options (opt
level, kernels, ...) are not part of that, so a slower build of the same model is caught; when
they differ the regression says which changed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnc.compiler.errors import NncError

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 30.0
ENV = "NNC_HISTORY"

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: runs and their layers
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        kind TEXT NOT NULL,
        model TEXT NOT NULL,
        model_hash TEXT NOT NULL,
        target TEXT NOT NULL,
        options TEXT NOT NULL,
        nnc_version TEXT NOT NULL,
        figures TEXT NOT NULL
    );
    CREATE TABLE layers (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        name TEXT,
        op TEXT,
        figures TEXT NOT NULL,
        PRIMARY KEY (run_id, idx)
    );
    """,
    # 1 -> 2: the scheme and the key figure as columns (regressions compare them), an index
    """
    ALTER TABLE runs ADD COLUMN scheme TEXT NOT NULL DEFAULT 'fp32';
    ALTER TABLE runs ADD COLUMN key_name TEXT;
    ALTER TABLE runs ADD COLUMN key_value REAL;
    ALTER TABLE runs ADD COLUMN lower_is_better INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX runs_by_model ON runs (model, target, time);
    """,
)
assert len(MIGRATIONS) == SCHEMA_VERSION

# relative change past which the key figure counts as a regression: instruction counts are
# exact (any increase is real, 0.1% leaves room for a changed driver); host latency is noisy
TOLERANCE = {"instructions": 0.001, "latency_ms": 0.10, "metric": 0.005}


OFF = ("off", "0", "none", "")  # a --history or $NNC_HISTORY value that turns recording off


def default_path() -> Path | None:
    """The history file: $NNC_HISTORY (None when 'off'), else the user's data directory."""
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in OFF else Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "nnc" / "history.sqlite"


def file_hash(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version() -> str:
    import nnc

    return str(nnc.__version__)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class Run:
    """One measurement. `key` is the figure regressions are judged on ("instructions",
    "latency_ms" or "metric")."""

    kind: str
    model: str
    model_hash: str
    target: str
    scheme: str
    options: dict[str, Any]
    figures: dict[str, Any]
    key: str
    key_value: float
    lower_is_better: bool = True
    layers: list[dict[str, Any]] = field(default_factory=list)
    time: str = field(default_factory=_now)
    nnc_version: str = field(default_factory=_version)
    id: int | None = None

    @staticmethod
    def from_bench(info: Mapping[str, Any], result: Mapping[str, Any]) -> Run:
        """A `nnc bench` run of a compiled model (`info`: its nnc.json) and its result."""
        src = info.get("model", {})
        device = "instructions" in result
        figures = {k: v for k, v in result.items() if k != "layers"}
        # host: the fastest run (load on the machine only adds time, so min is the steadiest)
        key, value = (("instructions", float(result["instructions"])) if device else
                      ("latency_ms", float(result["latency_ms"]["min"])))
        return Run("bench", src.get("name", "?"), src.get("sha256", "?"), str(info["target"]),
                   "int8" if "quantization" in info or info.get("int8_rounding") else "fp32",
                   dict(info.get("options", {})), figures, key, value, True,
                   [dict(la) for la in result.get("layers", [])])

    @staticmethod
    def from_tune(result: Any, model: str, model_hash: str, scheme: str,
                  options: Mapping[str, Any]) -> Run:
        """A `nnc tune` run (a `TuneResult`): the whole model's instructions with every best
        schedule, and per workload its default, best and figure per trial (the tuning curve)."""
        workloads = [{"hash": w.hash, "op": w.kind, "layers": list(w.layers),
                      "default": w.default, "best": w.best, "trials": w.trials,
                      "failed": w.failed, "wrong": w.wrong, "curve": list(w.history)}
                     for w in result.workloads]
        figures = {"instructions_default": result.model_default,
                   "instructions": result.model_tuned, "builds": result.builds,
                   "seconds": round(result.seconds, 1), "objective": result.objective,
                   "cache": str(result.cache), "stopped": result.stopped,
                   "workloads": workloads}
        layers = [{"name": name, "op": w["op"], "instructions": w["best"]}
                  for w in workloads for name in w["layers"]]
        return Run("tune", model, model_hash, result.target, scheme, dict(options), figures,
                   "instructions", float(result.model_tuned or 0), True, layers)

    @staticmethod
    def from_eval(result: Any, model_hash: str) -> list[Run]:
        """One run per compiled variant of a `nnc eval` (an `EvalResult`)."""
        runs = []
        data = result.to_json()
        for v in data["variants"]:
            if v["variant"] == "onnxruntime":
                continue
            where, scheme = v["variant"].split("-")
            target = result.target if where == "device" else "host"
            figures = {k: x for k, x in v.items() if k != "layers"}
            figures.update(metric_name=result.metric, samples=result.samples,
                           labelled=result.labelled)
            from nnc.compiler.eval import HIGHER_IS_BETTER

            runs.append(Run("eval", result.model, model_hash, target, scheme,
                            {**result.options, "variant": v["variant"]}, figures, "metric",
                            float(v["metric"]) if isinstance(v["metric"], float) else
                            float("inf"), not HIGHER_IS_BETTER[result.metric],
                            list(v.get("layers", []))))
        return runs


@dataclass(frozen=True)
class Regression:
    run: Run
    previous: Run
    change: float  # relative, in the bad direction (> 0 is worse)

    def describe(self) -> str:
        changed = sorted(k for k in set(self.run.options) | set(self.previous.options)
                         if self.run.options.get(k) != self.previous.options.get(k))
        why = ("; options changed: " + ", ".join(
            f"{k} {self.previous.options.get(k)!r} -> {self.run.options.get(k)!r}"
            for k in changed)) if changed else "; same options"
        return (f"REGRESSION {self.run.model} on {self.run.target} ({self.run.kind}, "
                f"{self.run.scheme}): {self.run.key} {_fmt(self.previous.key_value)} -> "
                f"{_fmt(self.run.key_value)} ({100 * self.change:+.1f}% worse), run "
                f"{self.previous.id} -> {self.run.id}{why}")


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


class History:
    """The SQLite history file at `path` (created with its folder when missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = self._connect()
        except sqlite3.DatabaseError as e:
            raise NncError(f"history {self.path}: {e} (give another file with --history, or "
                           f"{ENV}=off)") from None
        except OSError as e:
            raise NncError(f"history {self.path}: {e.strerror}") from None

    def _connect(self) -> sqlite3.Connection:
        """Connect, switch to WAL and migrate. Switching the journal mode of a file another
        process is creating at the same moment can fail with "database is locked" without
        SQLite's busy handler being called, so the whole sequence is retried until
        `BUSY_TIMEOUT_S`."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA foreign_keys=ON")
                self.db = db
                self._migrate()
                return db
            except sqlite3.OperationalError as e:
                db.close()
                busy = "locked" in str(e) or "busy" in str(e)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            except BaseException:
                db.close()
                raise

    @staticmethod
    def open(path: str | os.PathLike[str] | None = None) -> History | None:
        """`path`, else the default (None when recording is off: `--history off` as well as
        NNC_HISTORY=off; `./off` names a file called off)."""
        if isinstance(path, str) and path.strip().lower() in OFF:
            return None
        p = Path(path) if path is not None else default_path()
        return None if p is None else History(p)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        if self.version() == SCHEMA_VERSION:
            return
        with self._write() as db:
            v = self.version()  # again, inside the lock: another process may have migrated
            if v > SCHEMA_VERSION:
                raise NncError(f"history {self.path} has schema version {v}, newer than this "
                               f"nnc's {SCHEMA_VERSION}; upgrade nnc or use another file")
            for step in MIGRATIONS[v:]:
                for statement in filter(str.strip, step.split(";")):
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def record(self, run: Run) -> int:
        """Append `run` (and its layers) in one transaction; returns its id."""
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO runs (time, kind, model, model_hash, target, options, nnc_version,"
                " figures, scheme, key_name, key_value, lower_is_better)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run.time, run.kind, run.model, run.model_hash, run.target,
                 json.dumps(run.options, sort_keys=True), run.nnc_version,
                 json.dumps(run.figures), run.scheme, run.key, run.key_value,
                 int(run.lower_is_better)))
            run.id = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT INTO layers (run_id, idx, name, op, figures) VALUES (?, ?, ?, ?, ?)",
                [(run.id, i, la.get("name"), la.get("op"), json.dumps(la))
                 for i, la in enumerate(run.layers)])
        return run.id

    def runs(self, model: str | None = None, target: str | None = None,
             kind: str | None = None, layers: bool = False) -> list[Run]:
        """Runs in the order they were recorded, filtered by model name (or hash prefix),
        target and kind."""
        where, args = [], []
        if model is not None:
            where.append("(model = ? OR model_hash LIKE ?)")
            args += [model, model + "%"]
        if target is not None:
            where.append("target = ?")
            args.append(target)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        sql = ("SELECT id, time, kind, model, model_hash, target, options, nnc_version, "
               "figures, scheme, key_name, key_value, lower_is_better FROM runs"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id")
        out = []
        for row in self.db.execute(sql, args):
            r = Run(row[2], row[3], row[4], row[5], row[9], json.loads(row[6]),
                    json.loads(row[8]), row[10] or "", float(row[11] or 0.0), bool(row[12]),
                    time=row[1], nnc_version=row[7], id=row[0])
            if layers:
                r.layers = [json.loads(f) for (f,) in self.db.execute(
                    "SELECT figures FROM layers WHERE run_id = ? ORDER BY idx", (r.id,))]
            out.append(r)
        return out


def comparable_key(run: Run) -> tuple[str, ...]:
    return (run.kind, run.model_hash, run.target, run.scheme, run.key,
            str(run.options.get("variant", "")))


def regressions(runs: list[Run]) -> list[Regression]:
    """For each group of comparable runs, the last run against the one before it, when the key
    figure got worse by more than its tolerance."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for r in runs:
        groups.setdefault(comparable_key(r), []).append(r)
    out = []
    for group in groups.values():
        if len(group) < 2:
            continue
        prev, last = group[-2], group[-1]
        if last.key == "metric":  # an absolute change of a score in [0, 1] (or dB / MSE)
            change = prev.key_value - last.key_value
            if last.lower_is_better:
                change = -change
        else:
            base = max(abs(prev.key_value), 1e-12)
            change = (last.key_value - prev.key_value) / base
            if not last.lower_is_better:
                change = -change
        if change > TOLERANCE.get(last.key, 0.0):
            out.append(Regression(last, prev, change))
    return out


def table(runs: list[Run]) -> str:
    rows = [("id", "time (UTC)", "kind", "model", "hash", "target", "scheme", "figure", "value",
             "options")]
    for r in runs:
        opts = ",".join(f"{k}={v}" for k, v in sorted(r.options.items())
                        if v not in (None, [], {}) and k != "variants")
        rows.append((str(r.id), r.time[:19].replace("T", " "), r.kind, r.model,
                     r.model_hash[:8], r.target, r.scheme, r.key, _fmt(r.key_value), opts))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)
