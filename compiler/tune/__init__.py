"""The autotuner (`nnc tune`, `nnc.tune`): schedules measured per workload, kept in a cache.

- `space.py`    the legal schedules of a declarative definition (the default among them)
- `features.py` features of a scheduled loop nest for the cost model
- `search.py`   random search and the XGBoost-guided one
- `measure.py`  the compiler's front once; one firmware build measures every workload at once
- `cache.py`    the SQLite tuning cache
- `tuner.py`    a tuning session: batches, validation, resume, summary
- `apply.py`    `nnc.compile(tuning_cache=...)`: the cache's best schedules, no measurement
"""
