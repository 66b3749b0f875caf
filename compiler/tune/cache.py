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
import logging
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


_log = logging.getLogger("nnc.tune")


def isa_family(target: str) -> str | None:
    """The ISA family of a target key (`target=cortex-m7 isa=dsp/32 ...` -> `dsp/32`), or
    None where it names no vector ISA (the host's family is never guessed)."""
    for part in target.split():
        if part.startswith("isa="):
            isa = part.removeprefix("isa=")
            return None if isa.startswith("-") else isa
    return None


def target_cpu(target: str) -> str:
    return target.split()[0].removeprefix("target=")


def family_best(cache: TuningCache, workload: str, target: str, objective: str) -> Trial | None:
    """The best ok record of `workload` measured on another target of `target`'s ISA family
    (same objective; the workload key with its target part swapped), or None. A workload key
    ends with its target key, so the other target's key is `workload` with that tail
    replaced."""
    family = isa_family(target)
    if family is None or not workload.endswith(" " + target):
        return None
    stem = workload[: -len(target)]
    rows = cache._query(
        "SELECT * FROM trials WHERE objective = ? AND status = 'ok' AND target != ? AND "
        "target LIKE ? ORDER BY figure, id", [objective, target, f"% isa={family} %"])
    for r in rows:
        t = TuningCache._row(r)
        if isa_family(t.target) == family and t.workload == stem + t.target:
            return t
    return None


class CacheLookup(Mapping[str, tuple[Any, ...]]):
    """The best schedule per workload key for one target and objective, read from a cache as
    the compiler asks (`apply-tuning` calls `get(workload)`); `hits` lists the workloads it
    gave a schedule for. A row whose text no longer parses is skipped (and counted)."""

    def __init__(self, cache: TuningCache, target: str, objective: str,
                 family_fallback: bool = True) -> None:
        self.cache = cache
        self.target = target
        self.objective = objective
        self.family_fallback = family_fallback
        self.hits: list[str] = []
        self.fallbacks: list[tuple[str, str]] = []  # (workload, the target its record is for)
        self.unreadable = 0

    def __getitem__(self, workload: str) -> tuple[Any, ...]:
        from nnc.ir.loop_parser import parse_schedule
        from nnc.ir.parser import ParseError

        best = self.cache.best(workload, self.target, self.objective)
        if best is None and self.family_fallback:
            best = family_best(self.cache, workload, self.target, self.objective)
            if best is not None:
                self.fallbacks.append((workload, best.target))
                _log.warning("tuning cache %s: no record for %s on %s; using the one measured "
                             "on %s (same ISA family %s)", self.cache.path,
                             workload.split("(")[0], target_cpu(self.target),
                             target_cpu(best.target), isa_family(self.target))
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


# -- looking after a cache: prune, export, import

EXPORT_FORMAT = "nnc-tuning-export"
_FIELDS = ("workload", "target", "objective", "steps", "figure", "status", "error", "is_default",
           "features", "nnc_version", "toolchain", "created")


@dataclass(frozen=True)
class PruneReport:
    failed: int = 0
    superseded: int = 0
    other_versions: int = 0
    kept: int = 0

    @property
    def dropped(self) -> int:
        return self.failed + self.superseded + self.other_versions


def prune(cache: TuningCache, failed: bool = True, superseded: bool = False, keep: int = 1,
          other_versions: bool = False, dry_run: bool = False) -> PruneReport:
    """Drop records from `cache` in one transaction (all or none):
    `failed`: the `failed` and `wrong` trials; `superseded`: the ok trials of a (workload,
    target, objective) beyond its `keep` best and its default; `other_versions`: every record
    another nnc version wrote. `dry_run` counts and drops nothing. Note that superseded
    records are the cost model's warm-start data too."""
    if keep < 1:
        raise CacheError(f"cache prune --keep {keep}: keep at least 1 record per workload")
    version = nnc_version()
    trials = cache.trials()
    drop: dict[int, str] = {}
    if other_versions:
        for t in trials:
            if t.nnc_version != version:
                drop[t.id or 0] = "other_versions"
    if failed:
        for t in trials:
            if t.status != "ok" and t.id not in drop:
                drop[t.id or 0] = "failed"
    if superseded:
        groups: dict[tuple[str, str, str], list[Trial]] = {}
        for t in trials:
            if t.status == "ok" and t.id not in drop:
                groups.setdefault((t.workload, t.target, t.objective), []).append(t)
        for ts in groups.values():
            ranked = sorted(ts, key=lambda t: (t.figure or 0.0, t.id or 0))
            for t in ranked[keep:]:
                if not t.is_default:
                    drop[t.id or 0] = "superseded"
    counts = {"failed": 0, "superseded": 0, "other_versions": 0}
    for why in drop.values():
        counts[why] += 1
    if drop and not dry_run:
        try:
            with cache._transaction() as c:
                c.executemany("DELETE FROM trials WHERE id = ?", [(i,) for i in drop])
        except sqlite3.DatabaseError as e:
            raise CacheError(f"tuning cache {cache.path}: cannot prune ({e})") from None
    return PruneReport(**counts, kept=len(trials) - len(drop))


def _trial_dict(t: Trial) -> dict[str, Any]:
    return {f: getattr(t, f) for f in _FIELDS}


def export_cache(cache: TuningCache, out: str | os.PathLike[str],
                 workload: str | None = None) -> int:
    """Write `cache`'s trials (those of workloads whose hash starts with `workload`) to `out`:
    a JSON document (`.json`) or a new SQLite tuning cache (`.sqlite`/`.db`); returns how
    many. The file is written whole to a temporary name and renamed, so a killed export
    leaves no half file."""
    p = Path(out)
    if p.is_dir():
        raise CacheError(f"cache export {p}: is a directory; give a file name")
    if not p.parent.is_dir():
        raise CacheError(f"cache export {p}: directory {p.parent} does not exist")
    trials = [t for t in cache.trials() if t.workload_hash.startswith(workload or "")]
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        if p.suffix in (".sqlite", ".db", ".sqlite3"):
            if p.exists():
                raise CacheError(f"cache export {p}: exists; export into a new file (or `nnc "
                                 "cache import` to merge)")
            with TuningCache.open(tmp) as dst:
                _insert(dst, trials)
        else:
            doc = {"format": EXPORT_FORMAT, "schema_version": SCHEMA_VERSION,
                   "exported_by": f"nnc {nnc_version()}", "exported": time.time(),
                   "trials": [_trial_dict(t) for t in trials]}
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return len(trials)


def _read_export(path: Path) -> list[Trial]:
    """The trials of an export file (JSON or SQLite), all checked before any is merged."""
    if not path.is_file():
        raise CacheError(f"cache import {path}: no such file")
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"SQLite format 3"):
        with TuningCache.open(path, create=False) as src:
            return [Trial(**_trial_dict(t)) for t in src.trials()]
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheError(f"cache import {path}: neither an nnc tuning export (JSON) nor a "
                         f"tuning cache (SQLite): {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        what = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise CacheError(f"cache import {path}: JSON but not an nnc tuning export (format "
                         f"{what!r})")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise CacheError(f"cache import {path}: schema version {doc.get('schema_version')}, "
                         f"this nnc reads version {SCHEMA_VERSION}")
    records = doc.get("trials")
    if not isinstance(records, list):
        raise CacheError(f"cache import {path}: no list of trials")
    out = []
    text = ("workload", "target", "objective", "steps", "status", "nnc_version")
    for i, r in enumerate(records):
        bad = (not isinstance(r, dict) or set(r) != set(_FIELDS)
               or not all(isinstance(r[f], str) and r[f] for f in text)
               or r["status"] not in STATUSES
               or not isinstance(r["error"], str) or not isinstance(r["toolchain"], str)
               or not isinstance(r["is_default"], bool)
               or not (r["figure"] is None or isinstance(r["figure"], int | float))
               or (r["status"] == "ok" and r["figure"] is None)
               or not isinstance(r["created"], int | float)
               or not isinstance(r["features"], list)
               or not all(isinstance(x, int | float) for x in r["features"]))
        if bad:
            raise CacheError(f"cache import {path}: trial {i} is malformed (fields "
                             f"{', '.join(_FIELDS)}); nothing imported")
        out.append(Trial(**r))
    return out


def _key(t: Trial) -> tuple[Any, ...]:
    return (t.workload, t.target, t.objective, t.steps, t.figure, t.status, t.nnc_version,
            t.created)


def _insert(cache: TuningCache, trials: list[Trial]) -> int:
    have = {_key(t) for t in cache.trials()}
    new = []
    for t in trials:
        if _key(t) not in have:
            have.add(_key(t))
            new.append(t)
    with cache._transaction() as c:
        c.executemany(
            "INSERT INTO trials (workload, workload_hash, target, objective, steps, figure, "
            "status, error, is_default, features, nnc_version, toolchain, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(t.workload, t.workload_hash, t.target, t.objective, t.steps, t.figure, t.status,
              t.error, int(t.is_default), json.dumps(t.features) if t.features else "",
              t.nnc_version, t.toolchain, t.created) for t in new])
    return len(new)


def import_cache(cache: TuningCache, src: str | os.PathLike[str]) -> tuple[int, int]:
    """Merge the trials of `src` (a JSON export or another tuning cache) into `cache` in one
    transaction; records already there (same keys, steps, figure, status, version and time)
    are skipped. Returns (added, skipped). A foreign or malformed file: CacheError, nothing
    merged."""
    trials = _read_export(Path(src))
    try:
        added = _insert(cache, trials)
    except sqlite3.DatabaseError as e:
        raise CacheError(f"tuning cache {cache.path}: cannot import ({e})") from None
    return added, len(trials) - added
