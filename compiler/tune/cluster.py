"""`nnc tune --cluster ADDRESS`: a batch's builds fan out over a Dask distributed cluster.

    dask scheduler                          # on one machine: prints tcp://HOST:8786
    dask worker tcp://HOST:8786 --nthreads 1 --nworkers 2    # on each build machine
    nnc tune model.onnx --target cortex-m7 --quantize int8 --calibration DATA \\
        --cluster tcp://HOST:8786

Why Dask (`distributed`) and not Ray: pure-Python wheels from PyPI (Ray's is a few hundred MB of
native runtime), a scheduler and workers started with one command each on any machine that has
nnc, an in-process `LocalCluster` for the tests, and cloudpickle to ship the prepared front
(the imported, quantized and lowered model) to every worker once.

Each Dask worker measures whole builds, exactly as a forked `--workers` process does
(`tuner._measure`: the batch's build, re-measured candidate by candidate where it fails or
computes something else), with its own measurer and build folder, made on its first task of the
session from the front the client scattered. The client records the trials in the batch's order,
so the cache and the result are those of one process. Before the first batch every worker's
toolchain is compared with the client's (the C compiler's version, which the cache records with
each trial): a worker with another one, or none, is refused by name. A worker lost in the middle
of a build (killed, out of memory) makes that build's candidates `failed` trials ("cluster
worker lost"; a build lost with a worker that another build killed is measured once more), never
fatal and never cached as good.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnc.compiler.errors import NncError

INSTALL_HINT = "install Dask's distributed scheduler: pip install 'nnc[cluster]'"
CONNECT_TIMEOUT_S = 20

# on a worker: session id -> (own measurer, reference outputs, build folder)
_SESSIONS: dict[str, tuple[Any, Mapping[str, Any], str]] = {}


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise NncError(f"--cluster needs the 'distributed' package; {INSTALL_HINT}") from None
    return distributed


def _worker_toolchain(cc: str) -> str:
    """On a worker: the toolchain string `tuner._toolchain` would record there."""
    import subprocess

    if shutil.which(cc) is None:
        return f"{cc} (not found)"
    try:
        r = subprocess.run([cc, "-dumpversion"], capture_output=True, text=True, timeout=10)
        return f"{cc} {r.stdout.strip()}"
    except (OSError, subprocess.TimeoutExpired):
        return cc


def _session_measure(session: str, front: tuple[Any, Mapping[str, Any]],
                     cands: Mapping[str, Any]) -> tuple[dict[str, tuple[str, float | None, str]],
                                                        int]:
    """A Dask task: measure one build of `cands` on this worker (see the module docstring)."""
    from nnc.compiler.tune.tuner import _measure

    if session not in _SESSIONS:
        measurer, reference = front
        folder = tempfile.mkdtemp(prefix=f"nnc-tune-{session[:8]}-")
        own = getattr(measurer, "for_worker", None)
        _SESSIONS[session] = (own(Path(folder) / "w") if own else measurer, reference, folder)
    m, reference, _ = _SESSIONS[session]
    before = m.builds
    return _measure(m, cands, reference), m.builds - before


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _forget(session: str) -> None:
    """On a worker: drop the session's measurer and build folder."""
    entry = _SESSIONS.pop(session, None)
    if entry is not None:
        m, _, folder = entry
        close = getattr(m, "close", None)
        if close is not None:
            close()
        shutil.rmtree(folder, ignore_errors=True)


class ClusterPool:
    """The tuner's pool (`map(builds)`, `builds`, `close()`) on the Dask cluster at `address`
    (tcp://HOST:PORT, or a `distributed` Cluster / Client object: the tests' LocalCluster)."""

    def __init__(self, address: Any, measurer: Any, reference: Mapping[str, Any],
                 toolchain: str, cc: str) -> None:
        distributed = _distributed()
        self._own_client = not isinstance(address, distributed.Client)
        try:
            self.client = (address if not self._own_client else
                           distributed.Client(address, timeout=CONNECT_TIMEOUT_S,
                                              set_as_default=False))
        except (OSError, TimeoutError, ValueError) as e:
            raise NncError(f"--cluster {address}: cannot reach a Dask scheduler there ({e}); "
                           "start one with `dask scheduler` and workers with `dask worker "
                           "ADDRESS`") from None
        try:
            workers = self.client.scheduler_info()["workers"]
            if not workers:
                raise NncError(f"--cluster {self.client.scheduler.address}: the scheduler has "
                               "no workers; start some with `dask worker ADDRESS`")
            found = self.client.run(_worker_toolchain, cc)
            other = {w: t for w, t in found.items() if t != toolchain}
            if other:
                w, t = sorted(other.items())[0]
                raise NncError(f"--cluster: worker {w} has {t}, this machine {toolchain}; "
                               f"its figures would not be comparable ({len(other)} of "
                               f"{len(found)} workers differ): give every worker the same "
                               "toolchain")
            self.workers = len(workers)
            self.session = uuid.uuid4().hex
            self._front_data = (measurer, reference)
            self._scatter()
        except BaseException:
            self._close_client()
            raise
        self.builds = 0

    def map(self, builds: list[dict[str, Any]]
            ) -> list[dict[str, tuple[str, float | None, str]]]:
        distributed = _distributed()
        futures = [self._submit(cands) for cands in builds]
        out = []
        for cands, fut in zip(builds, futures, strict=True):
            lost = (distributed.KilledWorker, distributed.client.FutureCancelledError)
            try:
                results, n = fut.result()
            except lost:
                # a build queued on a worker that another build killed is lost with it (and
                # the front's copy on that worker): the front scattered again, the build once
                # more on its own, and only a build that kills its worker again is failed
                self._scatter()
                try:
                    results, n = self._submit(cands).result()
                except lost as e:
                    results = {k: ("failed", None, f"cluster worker lost: {_first_line(e)}")
                               for k in cands}
                    n = 2
            self.builds += n
            out.append(results)
        return out

    def _scatter(self) -> None:
        """The front on every worker of the moment (a restarted one too)."""
        self.front = self.client.scatter(self._front_data, broadcast=True, hash=False)

    def _submit(self, cands: Mapping[str, Any]) -> Any:
        return self.client.submit(_session_measure, self.session, self.front, cands,
                                  pure=False)

    def close(self) -> None:
        try:
            self.client.run(_forget, self.session)
        except Exception:  # noqa: BLE001 - a worker already gone has nothing to clean
            pass
        self._close_client()

    def _close_client(self) -> None:
        if self._own_client:
            self.client.close()
