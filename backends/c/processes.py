"""Running C compiler commands so that none outlives nnc.

Each command runs in a process group of its own, led by a small `sh` that kills the whole group
(gcc and its cc1/as/collect2 children) when it gets SIGTERM; on Linux `setpriv --pdeathsig`
sends it that SIGTERM when nnc dies, even of SIGKILL. When nnc itself stops a build (an error
in another command, Ctrl-C, SIGTERM turned into an exception by `nnc.compiler.signals`), it
kills the groups it started before the exception goes on.

    >>> run_commands([["gcc", "-c", "a.c"], ["gcc", "-c", "b.c"]], Path("out"), jobs=2)
    ... # doctest: +SKIP
    [(['gcc', '-c', 'a.c'], 0, ''), (['gcc', '-c', 'b.c'], 0, '')]
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import IO

# kill the group on TERM/HUP/INT; `wait` returns at once when a trapped signal arrives
_GROUP_LEADER = 'trap "kill -KILL 0" TERM HUP INT; "$@" & wait $!'
POLL_S = 0.005

Result = tuple[Sequence[str], int, str]  # (command, exit status (-1: not found), output)


@lru_cache(maxsize=1)
def _prefix() -> tuple[str, ...]:
    setpriv = shutil.which("setpriv")  # util-linux: sets PR_SET_PDEATHSIG, then execs
    sh = shutil.which("sh") or "/bin/sh"
    parent = (setpriv, "--pdeathsig", "TERM") if setpriv else ()
    return (*parent, sh, "-c", _GROUP_LEADER, "nnc-cc")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_commands(commands: Sequence[Sequence[str]], cwd: Path, jobs: int) -> list[Result | None]:
    """Run `commands` in `cwd`, at most `jobs` at a time, each with its stdout+stderr captured.
    After the first failure no new command starts (their results are None); the running ones
    finish. Any exception (KeyboardInterrupt included) kills the running groups first."""
    results: list[Result | None] = [None] * len(commands)
    running: dict[int, tuple[subprocess.Popen[bytes], IO[bytes]]] = {}
    pending = 0
    failed = False
    try:
        while running or (pending < len(commands) and not failed):
            while not failed and pending < len(commands) and len(running) < jobs:
                i, cmd = pending, commands[pending]
                pending += 1
                if shutil.which(cmd[0]) is None:
                    results[i], failed = (cmd, -1, ""), True
                    break
                log = tempfile.TemporaryFile()
                proc = subprocess.Popen([*_prefix(), *cmd], cwd=cwd, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
                running[i] = (proc, log)
            done = [i for i, (p, _) in running.items() if p.poll() is not None]
            if not done:
                time.sleep(POLL_S)
                continue
            for i in done:
                proc, log = running.pop(i)
                log.seek(0)
                output = log.read().decode("utf-8", "replace")
                log.close()
                results[i] = (commands[i], proc.returncode, output)
                failed = failed or proc.returncode != 0
    except BaseException:
        for proc, log in running.values():
            _kill(proc)
            log.close()
        raise
    return results
