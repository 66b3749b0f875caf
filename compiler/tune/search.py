"""Search strategies over a workload's schedule space.

- `RandomSearch`: distinct legal schedules drawn uniformly over the knobs.
- `GuidedSearch`: a pool of unmeasured candidates ranked by the `CostModel` (XGBoost,
  `rank:pairwise`, on `nnc.compiler.tune.features`); a batch is the predicted top-k plus an
  epsilon share of random candidates (so the model keeps seeing what it ranks low). The model is
  shared by all workloads of a session (one query group per workload) and refit after every
  batch on every measured trial, earlier sessions' included: a new workload starts from what
  the cache taught it about the others (warm start).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnc.compiler.tune.features import feature_names, features
from nnc.compiler.tune.space import ScheduleSpace, schedule_text
from nnc.ir.loops import ScheduleStep

POOL = 256  # unmeasured candidates the model ranks per workload
MIN_TRAIN = 8  # ok trials before the model is trusted


@dataclass
class Candidate:
    steps: tuple[ScheduleStep, ...]
    text: str
    features: list[float]


class CostModel:
    """XGBoost ranker over (workload group, features) -> lower figure ranks higher."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.model: Any = None
        self.rows: list[tuple[str, list[float], float]] = []  # (group, features, figure)

    def add(self, group: str, feats: Sequence[float], figure: float) -> None:
        # rows another nnc wrote with another feature set cannot train this one
        if feats and len(feats) == len(feature_names()):
            self.rows.append((group, list(feats), float(figure)))

    def fit(self) -> bool:
        """Refit on every row; False (and no model) while there are too few to rank."""
        import xgboost as xgb

        groups: dict[str, list[tuple[list[float], float]]] = {}
        for g, f, y in self.rows:
            groups.setdefault(g, []).append((f, y))
        groups = {g: rows for g, rows in groups.items() if len(rows) >= 2}
        if sum(len(r) for r in groups.values()) < MIN_TRAIN:
            self.model = None
            return False
        xs, ys, qid = [], [], []
        for qi, rows in enumerate(groups.values()):
            best = min(y for _, y in rows)
            for f, y in rows:
                xs.append(f)
                ys.append(float(np.log(best / y)) if y > 0 else -10.0)  # 0 for the best
                qid.append(qi)
        data = xgb.DMatrix(np.asarray(xs, np.float32), label=np.asarray(ys, np.float32),
                           qid=np.asarray(qid))
        params = {"objective": "rank:pairwise", "max_depth": 5, "eta": 0.2, "subsample": 0.9,
                  "seed": self.seed, "nthread": 1, "tree_method": "hist", "verbosity": 0}
        self.model = xgb.train(params, data, num_boost_round=60)
        return True

    def predict(self, feats: Sequence[Sequence[float]]) -> np.ndarray:
        import xgboost as xgb

        assert self.model is not None
        return np.asarray(self.model.predict(xgb.DMatrix(np.asarray(feats, np.float32))))


class RandomSearch:
    """Distinct legal schedules at random, none measured before."""

    name = "random"

    def __init__(self, space: ScheduleSpace, rng: random.Random,
                 measured: set[str] | None = None) -> None:
        self.space = space
        self.rng = rng
        self.measured = set(measured or ())

    def _candidate(self, steps: tuple[ScheduleStep, ...]) -> Candidate:
        return Candidate(steps, schedule_text(steps),
                         features(self.space.defn, steps, self.space.shapes))

    def propose(self, n: int) -> list[Candidate]:
        out = [self._candidate(s) for _, s in self.space.sample(self.rng, n, self.measured)]
        self.measured |= {c.text for c in out}
        return out

    def observe(self, text: str) -> None:
        self.measured.add(text)


class GuidedSearch(RandomSearch):
    """Top-k of the cost model's ranking of a pool, plus an epsilon share of random."""

    name = "guided"

    def __init__(self, space: ScheduleSpace, rng: random.Random, model: CostModel,
                 group: str, measured: set[str] | None = None, epsilon: float = 0.2) -> None:
        super().__init__(space, rng, measured)
        self.model = model
        self.group = group
        self.epsilon = epsilon
        self.pool: list[Candidate] = []

    def _refill(self) -> None:
        have = self.measured | {c.text for c in self.pool}
        need = POOL - len(self.pool)
        if need > 0:
            self.pool += [self._candidate(s) for _, s in self.space.sample(self.rng, need, have)]

    def propose(self, n: int) -> list[Candidate]:
        if self.model.model is None:
            return super().propose(n)
        self._refill()
        if not self.pool:
            return []
        scores = self.model.predict([c.features for c in self.pool])
        order = list(np.argsort(-scores, kind="stable"))
        n_random = int(round(n * self.epsilon)) if n > 1 else 0
        picked = [self.pool[i] for i in order[:max(n - n_random, 0)]]
        rest = [self.pool[i] for i in order[len(picked):]]
        picked += self.rng.sample(rest, min(n_random, len(rest)))
        chosen = {c.text for c in picked}
        self.pool = [c for c in self.pool if c.text not in chosen]
        self.measured |= chosen
        return picked
