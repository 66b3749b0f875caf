"""The output folder (`-o`): nnc owns only the files it wrote there, and replaces them whole.

    >>> with OutputDir("out") as out:                        # doctest: +SKIP
    ...     build_into(out.staging)                           # a fresh folder inside `out`
    ...     out.commit()                                      # swap the new build in

* **Manifest.** `out/.nnc-manifest.json` lists every file (with size and sha256) and folder of
  the build. A recompile replaces and removes only those: files the user put in the folder
  survive, and a file nnc did not write that the new build would overwrite is refused.
* **Staging inside the folder.** The build happens in `out/.nnc-staging-<pid>-XXXX` (same file
  system, so each file's move is one `rename`); `out` itself is never removed or renamed, so it
  may be a mount point.
* **Crash-safe swap.** Before the first move, a journal (`out/.nnc-commit.json`, written with
  fsync + rename) names the staging folder and both manifests. A kill before it leaves the old
  build intact; a kill after it is rolled forward by the next compile or load (`recover`). Every
  step of the roll-forward is idempotent.
* **Lock.** An exclusive `flock` on the folder itself: a second compile into the same folder is
  refused while the first runs. Where the file system has no flock (some NFS), a lock file
  `.nnc-lock` made with O_EXCL ("pid host"; a dead process's is taken over). Stale staging
  folders (of a killed compile) are removed by the next one, under the lock.
* **Permissions.** Folders are created with `mkdir` (the umask applies), never `mkdtemp`'s 0700
  for anything that stays.
* **An older nnc's litter.** Before the staging moved inside the folder, nnc staged beside it in
  `.<name>.XXXXXXXX` (`mkdtemp`), left behind when that compile was killed. A compile removes
  those that are provably nnc's and not in use (`remove_legacy_staging`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any

from nnc.errors import NncError

MANIFEST = ".nnc-manifest.json"
JOURNAL = ".nnc-commit.json"
STAGING_PREFIX = ".nnc-staging-"
METADATA = "nnc.json"
LOCK_FILE = ".nnc-lock"  # only where the file system has no flock
_OURS = (MANIFEST, JOURNAL, JOURNAL + ".tmp", LOCK_FILE)
_DEFERRED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}

# environment faults reported as the user's problem (exit 2), not as nnc's bug
FS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                       errno.EBUSY, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG,
                       errno.EMFILE, errno.ENFILE, errno.EIO, errno.ELOOP, errno.EXDEV,
                       errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT})


def fs_error(e: OSError, what: str) -> NncError:
    """A one-line user error for a file-system fault while `what` ("writing out/")."""
    where = f" ({e.filename})" if e.filename else ""
    return NncError(f"{what}: {e.strerror or e}{where}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def scan(root: Path) -> dict[str, Any]:
    """The manifest of the tree under `root`: {"files": {rel: {size, sha256}}, "dirs": [rel]}."""
    files: dict[str, Any] = {}
    dirs: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames.sort()
        for d in dirnames:
            dirs.append((rel_dir / d).as_posix())
        for name in sorted(filenames):
            rel = (rel_dir / name).as_posix()
            if rel in _OURS:
                continue
            p = Path(dirpath) / name
            files[rel] = {"size": p.stat().st_size, "sha256": sha256(p)}
    return {"version": 1, "files": files, "dirs": dirs}


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The folder's manifest; None without one (or an unreadable one: then nnc owns nothing)."""
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return None
    return data


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _roll_forward(root: Path, journal: dict[str, Any]) -> None:
    """Finish a commit: move the staged files in (replacing), remove the old build's files the
    new one lacks, then its empty folders, then install the manifest. Idempotent."""
    staging = root / journal["staging"]
    new = journal["new"]
    old_files = set(journal.get("old_files", []))
    for rel in new["files"]:
        src = staging / rel
        if src.exists():
            dst = root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)  # umask applies
            os.replace(src, dst)
    for rel in sorted(old_files - set(new["files"])):
        (root / rel).unlink(missing_ok=True)
    for rel in sorted(set(journal.get("old_dirs", [])) - set(new["dirs"]), reverse=True):
        try:
            (root / rel).rmdir()  # only when empty: a user's file keeps its folder
        except OSError:
            pass
    _write_atomic(root / MANIFEST, json.dumps(new, indent=1))
    shutil.rmtree(staging, ignore_errors=True)
    (root / JOURNAL).unlink(missing_ok=True)
    _fsync_dir(root)


def recover(root: Path) -> None:
    """Repair `root` after a killed compile: roll an interrupted commit forward, remove stale
    staging folders and journal temporaries. Call with the folder's lock held."""
    journal_path = root / JOURNAL
    if journal_path.exists():
        try:
            journal = json.loads(journal_path.read_text())
            _roll_forward(root, journal)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            journal_path.unlink(missing_ok=True)  # written atomically, so never half: foreign
    (root / (JOURNAL + ".tmp")).unlink(missing_ok=True)
    (root / (MANIFEST + ".tmp")).unlink(missing_ok=True)
    for entry in root.iterdir():
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


LEGACY_QUIET_S = 600  # an older nnc's running compile writes into its staging more often
_NNC_HEADER = b"/* Generated by nnc from model "  # the first line of every nnc's model.h


def _legacy_candidates(root: Path) -> list[Path]:
    """Folders beside `root` named as an older nnc's `mkdtemp(prefix=".<name>.")` staging."""
    if not root.name or root.name in (".", ".."):
        return []
    pattern = re.compile(re.escape(f".{root.name}.") + r"[a-z0-9_]{8}")
    try:
        entries = list(root.parent.iterdir())
    except OSError:
        return []
    return sorted(e for e in entries if pattern.fullmatch(e.name))


def _provably_nnc(folder: Path, now: float) -> bool:
    """Owned by this user, only regular files and folders inside, none changed for
    LEGACY_QUIET_S, and empty or holding a model.h that nnc generated."""
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return False
    newest, count = info.st_mtime, 0
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                return False  # a link, socket or device: not what nnc writes
            newest, count = max(newest, st.st_mtime), count + 1
    if now - newest < LEGACY_QUIET_S:
        return False
    if count == 0:
        return True  # killed before its first file: an empty folder holds nothing to lose
    try:
        with open(folder / "model.h", "rb") as f:
            return f.read(len(_NNC_HEADER)) == _NNC_HEADER
    except OSError:
        return False


def _in_use(folder: Path) -> bool:
    """Whether a process has its working directory, root or an open file inside `folder`
    (an older nnc ran the C compiler there). Processes /proc does not show us count as users."""
    inside = str(folder.resolve())
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True  # no /proc: cannot prove it is unused
    for pid in pids:
        links = [f"/proc/{pid}/cwd", f"/proc/{pid}/root"]
        try:
            links += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
        except FileNotFoundError:
            continue  # exited
        except PermissionError:
            try:
                if os.stat(f"/proc/{pid}").st_uid == os.getuid():
                    return True
            except OSError:
                pass
            continue  # another user's process: it cannot write into this user's 0700 folder
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if target == inside or target.startswith(inside + os.sep):
                return True
    return False


def remove_legacy_staging(root: Path, now: float | None = None) -> list[Path]:
    """Remove the staging folders an older nnc's killed compiles left beside `root`
    (`.<name>.XXXXXXXX`) that are provably nnc's (`_provably_nnc`) and not in use: no process
    inside (`_in_use`) and a non-blocking flock on the folder granted. Returns those removed;
    best effort (a folder that cannot be removed is left)."""
    now = time.time() if now is None else now
    removed = []
    for folder in _legacy_candidates(root):
        try:
            if not _provably_nnc(folder, now) or _in_use(folder):
                continue
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(folder)
            removed.append(folder)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def check_build(root: Path) -> None:
    """Before loading a compiled model: finish an interrupted commit (unless a compile is
    running there), and check that every file of the manifest is there with its size (a
    truncated libmodel.so would crash the process on load)."""
    if (root / JOURNAL).exists():
        try:
            fd = _lock(root)
        except OutputBusy:
            raise NncError(f"{root}: a compile is writing into this folder; wait for it to "
                           "finish") from None
        try:
            recover(root)
        finally:
            if fd is not None:
                os.close(fd)
    manifest = read_manifest(root)
    if manifest is None:
        return  # an older nnc's build: nothing to check against
    for rel, entry in manifest["files"].items():
        p = root / rel
        try:
            size = p.stat().st_size
        except OSError:
            msg = f"{root}: {rel} is missing from the compiled model; compile again"
            raise NncError(msg) from None
        if size != entry.get("size"):
            raise NncError(f"{root}: {rel} has changed since nnc wrote it ({size:,} bytes, "
                           f"expected {entry.get('size'):,}); compile again") from None


class OutputBusy(NncError):
    """Another compile holds the output folder's lock."""


def _busy(root: Path, holder: str = "") -> OutputBusy:
    return OutputBusy(f"{root}: another nnc compile{holder} is writing into this folder; wait "
                      "for it to finish or choose another -o")


def _lock(root: Path) -> int | Path:
    """An exclusive, non-blocking flock on the folder (its fd), or where the file system has
    no flock (some network file systems), the lock file LOCK_FILE (its path)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _busy(root) from None
    except OSError:
        os.close(fd)
        return _lock_file(root)
    return fd


def _lock_file(root: Path) -> Path:
    """LOCK_FILE made with O_EXCL (atomic on NFS v3+ too), holding "pid host". One whose
    process is gone (same host, no such pid) is stale and taken over; one of another host is
    trusted, and its message names it so that the user can remove it after a crash there."""
    path, me = root / LOCK_FILE, f"{os.getpid()} {socket.gethostname()}"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                pid_s, _, host = path.read_text().partition(" ")
            except FileNotFoundError:
                continue  # released meanwhile: try again
            if host.strip() == socket.gethostname() and pid_s.isdigit() \
                    and not _alive(int(pid_s)):
                path.unlink(missing_ok=True)  # its compile died: stale
                continue
            raise _busy(root, f" (process {pid_s} on {host.strip() or '?'}; {path} is its "
                              "lock)") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return path
    raise _busy(root)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


class OutputDir:
    """The output folder for one compile: lock, stale-staging cleanup, a staging folder, and the
    commit (or, on failure, the cleanup) of the build staged there."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        self.staging = self.root  # set by __enter__
        self._fd: int | Path | None = None  # the lock: a flock's fd, or the lock file
        self._created: Path | None = None  # the topmost folder this compile created
        self._refused = False  # another compile holds the folder's lock

    def __enter__(self) -> OutputDir:
        root = self.root
        if root.exists() and not root.is_dir():
            raise NncError(f"-o {root}: is a file, not a folder; give a folder name")
        try:
            for p in reversed([p for p in (root, *root.parents) if not p.exists()]):
                try:
                    p.mkdir()  # mode 0777 & ~umask
                except FileExistsError:
                    continue  # a concurrent compile made it: not ours to remove
                if self._created is None:
                    self._created = p
            try:
                self._fd = _lock(root)
            except OutputBusy:
                self._refused = True
                raise
            recover(root)
            remove_legacy_staging(root)
            self.staging = root / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            self.staging.mkdir()
        except OSError as e:
            self._release(failed=True)
            if e.errno in FS_ERRNOS:
                raise fs_error(e, f"cannot write the output folder {root}") from None
            raise
        except BaseException:
            self._release(failed=True)
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._release(failed=exc_type is not None)

    def owned(self) -> tuple[set[str], set[str]]:
        """The files and folders of the current build (empty for a fresh folder). A folder with
        nnc.json but no manifest is an older nnc's build: it owns what the new build replaces."""
        manifest = read_manifest(self.root)
        if manifest is not None:
            return set(manifest["files"]), set(manifest.get("dirs", []))
        return set(), set()

    def commit(self) -> None:
        """Swap the staged build in for the current one (see the module docstring)."""
        root = self.root
        try:
            new = scan(self.staging)
            old_files, old_dirs = self.owned()
            legacy = not old_files and (root / METADATA).is_file()
            foreign = [rel for rel in new["files"] if rel not in old_files and not legacy
                       and (root / rel).exists()]
            if foreign:
                names = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
                raise NncError(f"-o {root}: {names} exist{'s' if len(foreign) == 1 else ''} and "
                               "nnc did not write them; refusing to overwrite (move them away or "
                               "choose another -o)")
            journal = {"staging": self.staging.name, "new": new,
                       "old_files": sorted(old_files), "old_dirs": sorted(old_dirs)}
            # Ctrl-C/SIGTERM wait until the swap is done (they are raised as exceptions, which
            # would stop it halfway); SIGKILL is what the journal is for
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
            try:
                _write_atomic(root / JOURNAL, json.dumps(journal))
                _roll_forward(root, journal)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        except OSError as e:
            if e.errno in FS_ERRNOS:
                raise fs_error(e, f"cannot write the output folder {root}") from None
            raise

    def keep_failed(self) -> Path:
        """Move the staging folder out of the way as `<name>.failed-XXXX` beside the output
        folder (inside it as `nnc-failed-XXXX` where that is another file system) and return it."""
        tag = self.staging.name.rsplit("-", 1)[-1]
        for dest in (self.root.parent / f"{self.root.name}.failed-{tag}",
                     self.root / f"nnc-failed-{tag}"):
            try:
                self.staging.rename(dest)
                self.staging = dest
                return dest
            except OSError:
                continue
        return self.staging

    def _release(self, failed: bool) -> None:
        if (failed and self.staging != self.root and self.staging.name.startswith(STAGING_PREFIX)
                and not (self.root / JOURNAL).exists()):  # a journal: the next one rolls forward
            shutil.rmtree(self.staging, ignore_errors=True)
        if isinstance(self._fd, Path):  # the lock file goes before the folder it is in
            self._fd.unlink(missing_ok=True)
            self._fd = None
        if failed and not self._refused and self._created is not None:
            # a compile that created the folder and failed leaves nothing behind (but one
            # refused by the lock must not pull the folder from under the compile that took it)
            p = self.root
            while True:
                try:
                    p.rmdir()  # only when empty
                except OSError:
                    break
                if p == self._created:
                    break
                p = p.parent
        if isinstance(self._fd, int):
            os.close(self._fd)
        self._fd = None
