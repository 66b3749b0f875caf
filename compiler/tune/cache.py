"""The tuning cache: every measured candidate, in one SQLite file (stdlib `sqlite3`).

One row per trial: workload key (and its hash), target key, objective (`qemu-instructions`),
the schedule as text (`[Split(loop='oc', factor=4), ...]`, `nnc.ir.loop_parser.
parse_schedule` reads it back), the figure (lower is better), status (`ok`, `failed`: it did
not build or run, `wrong`: its outputs differ from the untuned build's), why, whether it is the
default schedule, its features (JSON, for the cost model's warm start), nnc's version, the
toolchain and the time. A schedule applies to a kernel only where workload key, target key and
objective all match (`best`); only `ok` rows count.

Each trial is committed on its own (one transaction), so a killed `nnc tune` loses only the
trials in flight and a rerun resumes from the file. The `meta` table holds the schema version
and an application tag: a file that is not a tuning cache, is corrupt, or has another schema
version is refused with a `CacheError` (an NncError: one message, exit 2).

    cache = TuningCache.open(path)            # created if missing
    cache.add(Trial(workload=..., target=..., objective=..., steps=..., figure=..., ...))
    cache.best(workload, target, objective)   # -> Trial of the lowest figure, or None
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnc.compiler.errors import NncError

SCHEMA_VERSION = 1
APPLICATION = "nnc-tuning-cache"
STATUSES = ("ok", "failed", "wrong")
CACHE_FILE = "tuning.sqlite"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trials (
    id INTEGER PRIMARY KEY,
    workload TEXT NOT NULL,
    workload_hash TEXT NOT NULL,
    target TEXT NOT NULL,
    objective TEXT NOT NULL,
    steps TEXT NOT NULL,
    figure REAL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'wrong')),
    error TEXT NOT NULL DEFAULT '',
    is_default INTEGER NOT NULL DEFAULT 0,
    features TEXT NOT NULL DEFAULT '',
    nnc_version TEXT NOT NULL,
    toolchain TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    CHECK (status != 'ok' OR figure IS NOT NULL)
);
CREATE INDEX trials_lookup ON trials (workload_hash, target, objective, status, figure);
"""


class CacheError(NncError):
    """The tuning cache file cannot be used (not one, corrupt, another schema version)."""


def default_cache_path() -> Path:
    """$NNC_TUNING_CACHE where it names a file, else $XDG_CACHE_HOME/nnc/tuning.sqlite
    (~/.cache/nnc/tuning.sqlite without XDG_CACHE_HOME)."""
    env = os.environ.get("NNC_TUNING_CACHE") or ""
    if env and env.lower() not in ("off", "0", "none", "no"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nnc" / CACHE_FILE


def nnc_version() -> str:
    import nnc

    return str(nnc.__version__)


@dataclass
class Trial:
    workload: str
    target: str
    objective: str
    steps: str
    figure: float | None
    status: str = "ok"
    error: str = ""
    is_default: bool = False
    features: list[float] = field(default_factory=list)
    nnc_version: str = ""
    toolchain: str = ""
    created: float = 0.0
    id: int | None = None

    @property
    def workload_hash(self) -> str:
        import hashlib

        return hashlib.sha256(self.workload.encode()).hexdigest()[:12]


class TuningCache:
    """An open tuning cache (see the module docstring)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    @staticmethod
    def open(path: str | os.PathLike[str] | None = None, create: bool = True) -> TuningCache:
        """Open (with `create`, create if missing) the cache at `path` (default:
        `default_cache_path()`); CacheError if the file is not a usable tuning cache."""
        p = Path(path) if path is not None else default_cache_path()
        if p.is_dir():
            raise CacheError(f"tuning cache {p}: is a directory; give a file name")
        exists = p.exists()
        if not exists and not create:
            raise CacheError(f"tuning cache {p}: no such file (`nnc tune` writes one)")
        if not exists:
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CacheError(f"tuning cache {p}: cannot create {p.parent} "
                                 f"({e.strerror})") from None
        try:
            conn = sqlite3.connect(p, timeout=30.0, isolation_level=None)
        except sqlite3.Error as e:
            raise CacheError(f"tuning cache {p}: cannot open ({e})") from None
        cache = TuningCache(p, conn)
        try:
            if exists and p.stat().st_size > 0:
                cache._check()
            else:
                cache._create()
        except sqlite3.DatabaseError as e:
            conn.close()
            raise CacheError(f"tuning cache {p}: not a tuning cache or corrupt ({e}); move it "
                             "away or pass another --cache file") from None
        except CacheError:
            conn.close()
            raise
        return cache

    def _create(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            have = {r[0] for r in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not have:
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    self.conn.execute(stmt)
                self.conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION)),
                    ("created_by", f"nnc {nnc_version()}")])
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self._check()

    def _check(self) -> None:
        check = [r[0] for r in self.conn.execute("PRAGMA quick_check").fetchall()]
        if check != ["ok"]:
            raise CacheError(f"tuning cache {self.path}: corrupt ({'; '.join(check[:3])}); move "
                             "it away or pass another --cache file")
        tables = {r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            raise CacheError(f"tuning cache {self.path}: an SQLite file but not an nnc tuning "
                             "cache (no meta table); pass another --cache file")
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("application") != APPLICATION:
            raise CacheError(f"tuning cache {self.path}: an SQLite file of something else "
                             f"(application {meta.get('application')!r}); pass another "
                             "--cache file")
        version = meta.get("schema_version")
        if version != str(SCHEMA_VERSION) or "trials" not in tables:
            raise CacheError(f"tuning cache {self.path}: schema version {version}, this nnc "
                             f"reads version {SCHEMA_VERSION}; tune again into a new file")

    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type: Any, *_: Any) -> None:
            self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _transaction(self) -> TuningCache._Tx:
        return TuningCache._Tx(self.conn)

    # -- writing

    def add(self, trial: Trial) -> int:
        """Record one trial (its own transaction); returns its id."""
        if trial.status not in STATUSES:
            raise ValueError(f"status {trial.status!r} is not one of {STATUSES}")
        if trial.status == "ok" and trial.figure is None:
            raise ValueError("an ok trial needs a figure")
        with self._transaction() as c:
            cur = c.execute(
                "INSERT INTO trials (workload, workload_hash, target, objective, steps, figure, "
                "status, error, is_default, features, nnc_version, toolchain, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (trial.workload, trial.workload_hash, trial.target, trial.objective,
                 trial.steps, trial.figure, trial.status, trial.error, int(trial.is_default),
                 json.dumps(trial.features) if trial.features else "",
                 trial.nnc_version or nnc_version(), trial.toolchain,
                 trial.created or time.time()))
        trial.id = cur.lastrowid
        return int(cur.lastrowid or 0)

    # -- reading

    def trials(self, workload: str | None = None, target: str | None = None,
               objective: str | None = None) -> list[Trial]:
        """The trials matching the given keys, oldest first."""
        where, args = [], []
        if workload is not None:
            import hashlib

            where.append("workload_hash = ? AND workload = ?")
            args += [hashlib.sha256(workload.encode()).hexdigest()[:12], workload]
        if target is not None:
            where.append("target = ?")
            args.append(target)
        if objective is not None:
            where.append("objective = ?")
            args.append(objective)
        sql = "SELECT * FROM trials" + (" WHERE " + " AND ".join(where) if where else "")
        return [self._row(r) for r in self._query(sql + " ORDER BY id", args)]

    def best(self, workload: str, target: str, objective: str) -> Trial | None:
        """The ok trial with the lowest figure for exactly this workload, target and
        objective (ties: the earliest), or None."""
        import hashlib

        rows = self._query(
            "SELECT * FROM trials WHERE workload_hash = ? AND workload = ? AND target = ? AND "
            "objective = ? AND status = 'ok' ORDER BY figure, id LIMIT 1",
            [hashlib.sha256(workload.encode()).hexdigest()[:12], workload, target, objective])
        return self._row(rows[0]) if rows else None

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM trials", [])[0][0])

    def _query(self, sql: str, args: list[Any]) -> list[Any]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise CacheError(f"tuning cache {self.path}: cannot read ({e})") from None

    @staticmethod
    def _row(r: Any) -> Trial:
        (id_, workload, _hash, target, objective, steps, figure, status, error, is_default,
         features, version, toolchain, created) = r
        return Trial(workload, target, objective, steps, figure, status, error,
                     bool(is_default), json.loads(features) if features else [], version,
                     toolchain, created, id_)

    def __iter__(self) -> Iterator[Trial]:
        return iter(self.trials())

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> TuningCache:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


class CacheLookup(Mapping[str, tuple[Any, ...]]):
    """The best schedule per workload key for one target and objective, read from a cache as
    the compiler asks (`apply-tuning` calls `get(workload)`); `hits` lists the workloads it
    gave a schedule for. A row whose text no longer parses is skipped (and counted)."""

    def __init__(self, cache: TuningCache, target: str, objective: str) -> None:
        self.cache = cache
        self.target = target
        self.objective = objective
        self.hits: list[str] = []
        self.unreadable = 0

    def __getitem__(self, workload: str) -> tuple[Any, ...]:
        from nnc.ir.loop_parser import parse_schedule
        from nnc.ir.parser import ParseError

        best = self.cache.best(workload, self.target, self.objective)
        if best is None:
            raise KeyError(workload)
        try:
            steps = parse_schedule(best.steps)
        except ParseError:
            self.unreadable += 1
            raise KeyError(workload) from None
        self.hits.append(workload)
        return steps

    def __iter__(self) -> Iterator[str]:
        rows = self.cache._query("SELECT DISTINCT workload FROM trials WHERE target = ? AND "
                                 "objective = ? AND status = 'ok'", [self.target, self.objective])
        return iter(r[0] for r in rows)

    def __len__(self) -> int:
        return sum(1 for _ in self)
