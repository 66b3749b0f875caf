"""The output folder: nnc replaces only what it wrote (the manifest), whole or not at all, keeps the
user's files, works on a mount point, refuses a second compile into the same folder, honours the
umask, and leaves no litter or running compiler behind when killed (fault injection)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save_model

import nnc
import nnc.compiler.output_dir as output_dir
from nnc.compiler.api import CompiledModel
from nnc.compiler.output_dir import JOURNAL, MANIFEST, STAGING_PREFIX, read_manifest, sha256
from nnc.errors import NncError


def _model(k: int):
    """x[2,4] @ w[4,k] -> relu: y has k columns, so two builds are told apart by y's shape."""
    w = np.linspace(-1, 1, 4 * k, dtype=np.float32).reshape(4, k)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, k])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[int, Path]:
    d = tmp_path_factory.mktemp("models")
    paths = {}
    for k in (3, 5):
        paths[k] = d / f"m{k}.onnx"
        save_model(_model(k), str(paths[k]))
    return paths


def _build_of(out: Path, staging: bool = False) -> int:
    """Which model the folder holds (y's columns), after checking that every file of the manifest
    is the one nnc wrote and that nothing else of nnc's lies there (but, with `staging`, what a
    SIGKILLed compile can leave and the next compile removes: a staging folder, a journal or
    manifest temporary killed before its rename)."""
    manifest = read_manifest(out)
    assert manifest is not None
    for rel, entry in manifest["files"].items():
        assert sha256(out / rel) == entry["sha256"], rel
    for p in out.rglob("*"):
        rel = p.relative_to(out).as_posix()
        assert (rel in manifest["files"] or rel in manifest["dirs"] or rel == MANIFEST
                or rel.startswith("user")
                or staging and (rel.startswith(STAGING_PREFIX)
                                or rel in (JOURNAL + ".tmp", MANIFEST + ".tmp"))), \
            f"{rel}: not in the manifest"
    return int(json.loads((out / "nnc.json").read_text())["outputs"][0]["shape"][1])


def _user_files(out: Path) -> None:
    (out / "user.txt").write_text("mine")
    (out / "user_dir").mkdir(exist_ok=True)
    (out / "user_dir" / "note.txt").write_text("also mine")


def _check_user_files(out: Path) -> None:
    assert (out / "user.txt").read_text() == "mine"
    assert (out / "user_dir" / "note.txt").read_text() == "also mine"


def test_recompile_replaces_only_nncs_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    nnc.compile(_model(3), output_dir=out)
    assert (out / "bench").exists()
    _user_files(out)
    inode = out.stat().st_ino
    m = nnc.compile(_model(5), output_dir=out, bench=False)
    _check_user_files(out)
    assert _build_of(out) == 5 and out.stat().st_ino == inode  # the folder itself stays
    assert not (out / "bench").exists() and not (out / "bench_main.o").exists()  # stale: gone
    assert m.run(m.random_inputs())["y"].shape == (2, 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing beside it


def test_compile_into_a_folder_with_other_files(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    out.mkdir()
    _user_files(out)
    nnc.compile(_model(3), output_dir=out)
    _check_user_files(out)
    assert _build_of(out) == 3
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "Makefile").write_text("all:\n")  # a name the build would write
    with pytest.raises(NncError, match="Makefile exists and nnc did not write"):
        nnc.compile(_model(3), output_dir=tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["Makefile"]
    assert (tmp_path / "mine" / "Makefile").read_text() == "all:\n"


def test_output_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NncError, match="is a file, not a folder"):
        nnc.compile(_model(3), output_dir=tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_folders_honour_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        nnc.compile(_model(3), output_dir=tmp_path / "a" / "out")
    finally:
        os.umask(old)
    for d in (tmp_path / "a", tmp_path / "a" / "out"):
        assert d.stat().st_mode & 0o777 == 0o777 & ~umask, d
    assert (tmp_path / "a" / "out" / "model.c").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_second_compile_is_refused_while_one_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    nnc.compile(_model(3), output_dir=out)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a running compile holds
    try:
        with pytest.raises(NncError, match="another nnc compile is writing into this folder"):
            nnc.compile(_model(5), output_dir=out)
    finally:
        os.close(fd)
    assert _build_of(out) == 3
    nnc.compile(_model(5), output_dir=out)
    assert _build_of(out) == 5


def _nnc(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "nnc.compiler.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_concurrent_compiles(tmp_path: Path, models: dict[int, Path]) -> None:
    """Two compiles started together: each either succeeds or is refused with the lock's
    message, never anything else, and the folder holds one whole build."""
    out = tmp_path / "new" / "out"  # made by whichever compile gets there first
    procs = [_nnc("compile", models[k], "-o", out) for k in (3, 5, 3, 5)]
    results = [(p.wait(60), p.stderr.read() if p.stderr else "") for p in procs]
    for rc, err in results:
        assert rc == 0 or (rc == 2 and "another nnc compile" in err), err
    assert any(rc == 0 for rc, _ in results)
    assert _build_of(out) in (3, 5)


def test_a_folder_made_meanwhile_by_another_compile(tmp_path: Path, monkeypatch) -> None:
    """The race of two compiles into a folder that does not exist yet: both see it missing, the
    other one makes it first. This compile's mkdir then finds it there, which is no error (it
    was one: "cannot write the output folder ...: File exists")."""
    out = tmp_path / "a" / "out"
    real_mkdir = Path.mkdir

    def raced(self, *args, **kwargs):
        if self == out and not out.exists():
            real_mkdir(out)  # the other compile, just before us
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", raced)
    nnc.compile(_model(3), output_dir=out)
    assert _build_of(out) == 3


def test_a_refused_compile_leaves_the_folder_it_made_to_the_one_that_holds_it(
        tmp_path: Path, monkeypatch) -> None:
    """A compile that created the folder but lost the lock to another must not remove the
    folder (the other is about to write its build there) when it gives up."""
    out = tmp_path / "a" / "out"
    real_lock = output_dir._lock

    def taken(root):
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)  # the other compile takes it first
        fcntl.flock(fd, fcntl.LOCK_EX)
        taken.fd = fd
        return real_lock(root)

    monkeypatch.setattr(output_dir, "_lock", taken)
    try:
        with pytest.raises(NncError, match="another nnc compile"):
            nnc.compile(_model(3), output_dir=out)
        assert out.is_dir()
    finally:
        os.close(taken.fd)


def test_interrupted_commit_rolls_forward(tmp_path: Path, monkeypatch) -> None:
    """A crash at every step of the swap (the n-th rename or unlink fails) leaves a journal
    from which the next load finishes the new build; before the journal, the old one stands."""
    out = tmp_path / "out"
    nnc.compile(_model(3), output_dir=out)
    _user_files(out)
    real_replace = os.replace
    for n in range(0, 40, 3):
        calls = {"n": 0}

        def flaky(src, dst, _n=n, _calls=calls):
            _calls["n"] += 1
            if _calls["n"] > _n:
                raise OSError(5, "injected I/O error", str(dst))
            return real_replace(src, dst)

        target = 5 if _build_of(out) == 3 else 3
        monkeypatch.setattr(output_dir.os, "replace", flaky)
        try:
            nnc.compile(_model(target), output_dir=out)
            completed = True
        except NncError as e:
            assert "injected I/O error" in str(e)
            completed = False
        finally:
            monkeypatch.setattr(output_dir.os, "replace", real_replace)
        _check_user_files(out)
        if (out / JOURNAL).exists():
            CompiledModel.load(out)  # rolls the commit forward
            assert _build_of(out) == target
        elif not completed:
            assert _build_of(out) == 5 + 3 - target  # failed before the commit point
        assert not list(out.glob(STAGING_PREFIX + "*"))


def test_load_reports_a_damaged_build(tmp_path: Path) -> None:
    out = tmp_path / "out"
    nnc.compile(_model(3), output_dir=out)
    lib = out / "libmodel.so"
    lib.write_bytes(lib.read_bytes()[:1000])  # would die of SIGBUS in dlopen
    with pytest.raises(NncError, match="libmodel.so has changed since nnc wrote it"):
        CompiledModel.load(out)
    lib.unlink()
    with pytest.raises(NncError, match="libmodel.so is missing from the compiled model"):
        CompiledModel.load(out)
    nnc.compile(_model(3), output_dir=out)
    (out / "nnc.json").write_bytes(b"{\xff")
    with pytest.raises(NncError, match="nnc.json has changed since nnc wrote it"):
        CompiledModel.load(out)
    (out / MANIFEST).unlink()  # as an older nnc left it: then nnc.json itself is checked
    with pytest.raises(NncError, match="nnc.json: not valid JSON"):
        CompiledModel.load(out)
    (out / "nnc.json").write_text("[1]")
    with pytest.raises(NncError, match="not an nnc model description"):
        CompiledModel.load(out)


def test_a_truncated_library_without_a_manifest_is_refused_not_sigbus(tmp_path: Path) -> None:
    """An older nnc's build (no manifest) with a cut libmodel.so: its ELF headers point past
    the end, so `nnc run` says so (exit 2) instead of dying of SIGBUS in dlopen."""
    import subprocess
    import sys

    from nnc.backends.c.run import HostModel

    out = tmp_path / "out"
    nnc.compile(_model(3), output_dir=out)
    (out / MANIFEST).unlink()
    lib = out / "libmodel.so"
    data = lib.read_bytes()
    for cut in (len(data) // 2, len(data) - 64, 12):
        lib.write_bytes(data[:cut])
        with pytest.raises(NncError, match="libmodel.so: not a complete shared library"):
            HostModel(out)
    lib.write_bytes(data[:len(data) // 2])
    r = subprocess.run([sys.executable, "-m", "nnc.compiler.cli", "run", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r
    assert r.stderr.count("\n") == 1 and "compile again" in r.stderr and "Traceback" not in r.stderr
    lib.write_bytes(data)
    assert HostModel(out).inputs  # whole again: loads


# ------------------------------------------------------------------- mount points (root only)


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "nnc-test", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture
def mount(tmp_path: Path):
    mounted: list[Path] = []

    def make(name: str, options: str = "size=64m") -> Path:
        path = tmp_path / name
        if not _mount_tmpfs(path, options):
            pytest.skip("needs root and tmpfs mounts")
        mounted.append(path)
        return path

    yield make
    for p in reversed(mounted):
        subprocess.run(["umount", "-l", str(p)], capture_output=True)


def test_output_on_a_mount_point(mount) -> None:
    out = mount("vol")
    _user_files(out)
    nnc.compile(_model(3), output_dir=out)
    nnc.compile(_model(5), output_dir=out)
    _check_user_files(out)
    assert _build_of(out) == 5


def test_read_only_and_full_file_systems(mount) -> None:
    ro = mount("ro")
    nnc.compile(_model(3), output_dir=ro)
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    with pytest.raises(NncError, match="Read-only file system"):
        nnc.compile(_model(5), output_dir=ro)
    assert _build_of(ro) == 3
    full = mount("full", "size=64k")
    with pytest.raises(NncError, match="No space left on device"):
        nnc.compile(_model(5), output_dir=full)
    assert list(full.iterdir()) == []


# ------------------------------------------------------------------------- fault injection


def _our_processes(root: Path) -> list[str]:
    """Processes (other than this one) running in a folder under `root` (the C compiler runs in
    the staging folder)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd.startswith(str(root)):
            found.append(f"{pid}: {cmd[:120]}")
    return found


def _wait_no_processes(root: Path, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _our_processes(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_compiles(tmp_path: Path, models: dict[int, Path], sig: int) -> None:
    """12 compiles killed at seeded random moments (half anywhere from the interpreter's start
    to past the commit, half during the C build and the swap): the user's files stay, the folder
    holds the old build or the new one whole (after the journal's roll-forward where the kill
    hit the swap), no compiler process survives, and SIGTERM leaves no litter at once
    (SIGKILL's staging folder goes with the next compile)."""
    out = tmp_path / "out"
    # a C compiler that takes a moment (as on a bigger model), so that on a fast machine too the
    # kills meant for the C build and the swap land while the staging folder exists
    (tmp_path / "tools").mkdir()
    cc = tmp_path / "tools" / "steady-cc"
    cc.write_text('#!/bin/sh\nsleep 0.3\nexec gcc "$@"\n')
    cc.chmod(0o755)
    env = {**os.environ, "NNC_CC": str(cc)}
    t0 = time.monotonic()
    assert _nnc("compile", models[3], "-o", out, env=env).wait(60) == 0
    full = time.monotonic() - t0
    _user_files(out)
    rng = random.Random(1000 + sig)
    current, seen_staging = 3, 0
    for i in range(12):
        target = 5 if current == 3 else 3
        proc = _nnc("compile", models[target], "-o", out, env=env)
        if i % 2 == 0:  # anywhere in the run
            time.sleep(rng.uniform(0.2, 1.1) * full)
        else:  # in the C build or the swap: once the staging folder appears
            deadline = time.monotonic() + 2 * full
            while not list(out.glob(STAGING_PREFIX + "*")) and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.35))
        staged = bool(list(out.glob(STAGING_PREFIX + "*")))
        seen_staging += staged
        proc.send_signal(sig)
        rc = proc.wait(30)
        err = proc.stderr.read() if proc.stderr else ""
        assert rc in (0, -sig, 128 + sig), err
        if sig == signal.SIGTERM and rc == 128 + sig:
            assert "nnc: terminated (SIGTERM)" in err
        assert _wait_no_processes(out) == []
        _check_user_files(out)
        litter = [p.name for p in out.iterdir() if p.name.startswith((".nnc-staging", JOURNAL))]
        if sig == signal.SIGTERM:
            assert litter == [], litter
        if (out / JOURNAL).exists():
            CompiledModel.load(out)
        built = _build_of(out, staging=sig == signal.SIGKILL)
        assert built in (current, target)
        current = built
    assert seen_staging >= 5  # the kills did land inside builds
    assert _nnc("compile", models[3], "-o", out).wait(60) == 0
    assert _build_of(out) == 3 and not list(out.glob(".nnc-*staging*"))
    assert not list(out.glob("*.tmp"))
    _check_user_files(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tools"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_no_compiler_outlives_nnc(tmp_path: Path, models: dict[int, Path], sig: int) -> None:
    """A C compiler that takes long (a sleep before gcc, standing in for a big model.c) is gone
    within a second of nnc's death, SIGKILL included; SIGTERM removes the staging folder too."""
    cc = tmp_path / "slow-cc"
    cc.write_text('#!/bin/sh\nsleep 30\nexec gcc "$@"\n')
    cc.chmod(0o755)
    out = tmp_path / "out"
    env = {**os.environ, "NNC_CC": str(cc)}
    proc = subprocess.Popen([sys.executable, "-m", "nnc.compiler.cli", "compile", models[3],
                             "-o", out], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not _our_processes(out) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _our_processes(out), "the compiler never started"
    proc.send_signal(sig)
    proc.wait(10)
    assert _wait_no_processes(out, timeout=1.0) == []
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + sig and not out.exists()  # it created the folder


def _legacy(parent: Path, tag: str, marker: bool = True, age: float = 3600) -> Path:
    """An older nnc's staging folder beside `parent / "out"` (`.out.XXXXXXXX`), `age` s old."""
    d = parent / f".out.{tag}"
    d.mkdir(mode=0o700)
    if marker:
        (d / "model.h").write_text("/* Generated by nnc from model 'm'. Do not edit.\n */\n")
        (d / "model.c").write_text("int x;\n")
        (d / "sub").mkdir()
        (d / "sub" / "a.o").write_bytes(b"\0" * 10)
    old = time.time() - age
    for p in [*d.rglob("*"), d]:
        os.utime(p, (old, old))
    return d


def test_an_older_nncs_stale_staging_is_removed(tmp_path) -> None:
    """`.out.XXXXXXXX` beside -o (an older nnc staged there with mkdtemp and, killed, left it):
    removed by the next compile when it is nnc's (its model.h, or empty) and not in use."""
    stale, empty = _legacy(tmp_path, "ab12cd_9"), _legacy(tmp_path, "zzzzzzzz", marker=False)
    recent = _legacy(tmp_path, "recent00", age=10)  # a running old compile writes into it
    foreign = _legacy(tmp_path, "user0000", marker=False)
    (foreign / "notes.txt").write_text("mine")
    os.utime(foreign / "notes.txt", (time.time() - 3600,) * 2)
    os.utime(foreign, (time.time() - 3600,) * 2)
    other_name = _legacy(tmp_path, "x", marker=True)  # not mkdtemp's 8 characters
    linked = _legacy(tmp_path, "linked00")
    (linked / "link").symlink_to("/etc")
    os.utime(linked, (time.time() - 3600,) * 2)
    with output_dir.OutputDir(tmp_path / "out"):
        pass
    assert not stale.exists() and not empty.exists()
    assert recent.exists() and foreign.exists() and other_name.exists() and linked.exists()
    assert (foreign / "notes.txt").read_text() == "mine"


def test_an_older_nncs_staging_in_use_is_kept(tmp_path) -> None:
    """A process working inside it (an older nnc runs the C compiler there), or a flock on it,
    keeps it."""
    busy, locked = _legacy(tmp_path, "busy0000"), _legacy(tmp_path, "locked00")
    proc = subprocess.Popen(["sleep", "30"], cwd=busy)
    fd = os.open(locked, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert output_dir.remove_legacy_staging(tmp_path / "out") == []
    finally:
        proc.kill()
        proc.wait()
        os.close(fd)
    assert busy.exists() and locked.exists()
    assert sorted(output_dir.remove_legacy_staging(tmp_path / "out")) == [busy, locked]


def test_a_lock_file_where_the_file_system_has_no_flock(tmp_path: Path, monkeypatch) -> None:
    """Without flock (some NFS: ENOLCK), the folder is locked by an O_EXCL lock file: a live
    holder's refuses the second compile, naming it; a dead process's is taken over; the lock
    file is not part of the build and is gone afterwards."""
    real_flock = fcntl.flock

    def no_flock(fd: int, op: int) -> None:
        if op & fcntl.LOCK_NB:
            raise OSError(errno.ENOLCK, "No locks available")
        real_flock(fd, op)

    monkeypatch.setattr(output_dir.fcntl, "flock", no_flock)
    out = tmp_path / "out"
    nnc.compile(_model(3), output_dir=out)
    assert not (out / output_dir.LOCK_FILE).exists()
    assert output_dir.LOCK_FILE not in (out / ".nnc-manifest.json").read_text()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / output_dir.LOCK_FILE).write_text(f"{holder.pid} {socket.gethostname()}")
        with pytest.raises(NncError, match=f"another nnc compile \\(process {holder.pid} on"):
            nnc.compile(_model(5), output_dir=out)
        assert json.loads((out / "nnc.json").read_text())["outputs"][0]["shape"][1] == 3
    finally:
        holder.kill()
        holder.wait()
    nnc.compile(_model(5), output_dir=out)  # the dead holder's lock is stale: taken over
    assert _build_of(out) == 5 and not (out / output_dir.LOCK_FILE).exists()
