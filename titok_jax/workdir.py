"""The run directory: where every stage and step of a run keeps its outputs, how a finished one is known,
and who may write there.

    WORKDIR/config.json                 the run config (process 0); a resume compares against it
    WORKDIR/RUN.lock                    host, pid and heartbeat of the run writing here (one at a time)
    WORKDIR/<stage>/checkpoints/        Orbax checkpoints of a training stage (resume)
    WORKDIR/<stage>/final/              its hand-off params (EMA), in the ``port import`` format; written
                                        to final.partial/ and renamed, so it exists complete or not at all
    WORKDIR/<stage>/logs/               TensorBoard event files + metrics.jsonl
    WORKDIR/<stage>/DONE.json           written last: the stage or step is finished (its summary)

Paths go through ``etils.epath``, so a workdir may be a local path or a ``gs://`` URL (``path()``);
local paths are made absolute. ``tokenizer_checkpoint`` answers "which tokenizer does a later step
use": an explicit params directory, else the latest finished tokenizer stage (stage2, then
single_stage, then stage1).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Any, Dict, Optional, Union

from etils import epath

from titok_jax.errors import InputError

log = logging.getLogger(__name__)

TOKENIZER_STAGES = ("stage2", "single_stage", "stage1")  # latest first: where a run's tokenizer ends up
DONE = "DONE.json"
LOCK = "RUN.lock"
PathLike = Union[str, os.PathLike]


def is_url(p: PathLike) -> bool:
    return "://" in os.fspath(p)


def path(p: PathLike) -> epath.Path:
    """``p`` as an ``epath.Path``: a URL (``gs://...``) as it is, a local path absolute with ``~`` expanded."""
    s = os.fspath(p)
    return epath.Path(s if is_url(s) else os.path.abspath(os.path.expanduser(s)))


def resolve(p: PathLike) -> str:
    """``path(p)`` as a string (what the rest of the code passes around)."""
    return os.fspath(path(p))


def stage_dir(workdir: PathLike, stage: str) -> str:
    return os.fspath(path(workdir) / stage)


def final_dir(workdir: PathLike, stage: str) -> str:
    return os.fspath(path(workdir) / stage / "final")


def done_path(workdir: PathLike, stage: str) -> str:
    return os.fspath(path(workdir) / stage / DONE)


def exists(p: PathLike) -> bool:
    return path(p).exists()


def is_dir(p: PathLike) -> bool:
    return path(p).is_dir()


def remove_tree(p: PathLike) -> None:
    """Delete a file or folder if present."""
    q = path(p)
    if q.is_dir():
        q.rmtree()
    elif q.exists():
        q.unlink()


def rename(src: PathLike, dst: PathLike) -> None:
    """Rename ``src`` to ``dst`` (atomic on a POSIX filesystem; a copy and a delete on object stores)."""
    path(src).rename(path(dst))


def read_json(p: PathLike) -> Any:
    return json.loads(path(p).read_text())


def read_done(workdir: PathLike, stage: str) -> Optional[Dict[str, Any]]:
    """The summary of a finished stage/step, or None when it has not finished."""
    p = path(done_path(workdir, stage))
    return json.loads(p.read_text()) if p.exists() else None


def write_json_atomic(p: PathLike, obj: Any) -> None:
    """Write JSON through a temporary file and a rename (local; an object store writes an object whole):
    readers see all of it or nothing."""
    q = path(p)
    q.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, default=str)
    if is_url(q):
        q.write_text(text)
        return
    tmp = f"{q}.tmp.{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, q)


def write_done(workdir: PathLike, stage: str, summary: Dict[str, Any]) -> None:
    write_json_atomic(done_path(workdir, stage), summary)


def stage_finished(workdir: PathLike, stage: str) -> bool:
    return is_dir(final_dir(workdir, stage))


def stage_started(workdir: PathLike, stage: str) -> bool:
    """True when a training stage has written a checkpoint or finished in ``workdir``."""
    base = path(workdir) / stage
    ckpts = base / "checkpoints"
    return (base / DONE).exists() or (ckpts.is_dir() and any(c.name.isdigit() for c in ckpts.iterdir()))


def tokenizer_checkpoint(workdir: PathLike, explicit: str = "", section: str = "") -> str:
    """The tokenizer params to use after training: ``explicit`` (an Orbax params directory from
    ``port import`` or a stage's ``final/``) or else the latest finished tokenizer stage under
    ``workdir``. ``section`` names the config section of the step asking (for the error message)."""
    opt = f"config.{section}." if section else ""
    if explicit:
        p = resolve(explicit)
        if not is_dir(p):
            raise InputError(
                f"{opt}tokenizer_checkpoint={explicit} not found (expected an Orbax params directory: a stage's "
                "final/ or the output of `titok-port import`)"
            )
        return p
    looked = []
    for name in TOKENIZER_STAGES:
        p = final_dir(workdir, name)
        if is_dir(p):
            return p
        looked.append(p)
    raise InputError(
        f"no tokenizer checkpoint: none of {', '.join(looked)} exists. Train one first (list stage1/stage2 or "
        f"single_stage earlier in config.stages), or set {opt}tokenizer_checkpoint to an Orbax params directory "
        "(a stage's final/, or the output of `titok-port import --config=... --weights=tokenizer_titok_*.bin "
        f"--out=DIR`), or {opt}tokenizer_weights to an official weight file (.safetensors, or .bin with "
        "allow_pickle=True)"
    )


def generator_checkpoint(workdir: PathLike) -> str:
    """The trained generator of a run (``WORKDIR/generator/final``)."""
    p = final_dir(workdir, "generator")
    if not is_dir(p):
        raise InputError(
            f"no trained generator in {workdir} (expected {p}): run the 'generator' stage, or pass "
            "--generator_checkpoint / --generator_weights"
        )
    return p


# ---------------------------------------------------------------------------------------------- one writer
class WorkdirBusy(InputError):
    """Another run holds the workdir's lock."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class WorkdirLock:
    """``WORKDIR/RUN.lock``: one run writes a workdir at a time (process 0 of a run holds it).

    The file holds the holder's host, pid, command and a heartbeat time that a thread refreshes every
    ``HEARTBEAT`` seconds. A lock is stale -- and taken over with a warning -- when its pid is not
    running on this host, or when its heartbeat is older than ``STALE_AFTER`` seconds (a holder on
    another host that died). On a local filesystem taking the lock is atomic (``O_EXCL``); on an object
    store it is a write and a read-back (two runs started within the same second can both pass).
    """

    HEARTBEAT = 60.0
    STALE_AFTER = 600.0

    def __init__(self, workdir: PathLike):
        self.path = path(workdir) / LOCK
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv),
                     "started": time.time(), "heartbeat": time.time()}  # fmt: skip
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.held = False

    # -- state of the file ---------------------------------------------------------------------------------
    def holder(self) -> Optional[Dict[str, Any]]:
        try:
            info = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged: treated as held until it goes stale by its age
        return info if isinstance(info, dict) else {}

    def _stale(self, info: Dict[str, Any]) -> Optional[str]:
        """Why the lock described by ``info`` is stale, or None while its holder may be alive."""
        if info.get("host") == self.info["host"] and isinstance(info.get("pid"), int):
            return None if _pid_alive(info["pid"]) else f"pid {info['pid']} is not running on {info['host']}"
        try:
            age = time.time() - max(float(info.get("heartbeat", 0)), self.path.stat().mtime)
        except (OSError, TypeError, ValueError):
            return None
        return f"no heartbeat for {age:.0f}s" if age > self.STALE_AFTER else None

    def _write(self, exclusive: bool) -> bool:
        text = json.dumps(self.info)
        if is_url(self.path):
            if exclusive and self.path.exists():
                return False
            self.path.write_text(text)
            return self.holder() == self.info
        if not exclusive:
            write_json_atomic(self.path, self.info)
            return True
        try:
            fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True

    # -- acquire / release ---------------------------------------------------------------------------------
    def acquire(self) -> "WorkdirLock":
        if self.held:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._write(exclusive=True):
                self.held = True
                self._start_heartbeat()
                return self
            info = self.holder()
            if info is None:
                continue  # released meanwhile: try again
            why = self._stale(info)
            if why is None:
                raise WorkdirBusy(
                    f"{self.path.parent} is in use by another run (host {info.get('host', '?')}, pid "
                    f"{info.get('pid', '?')}, command: {info.get('command', '?')}); wait for it to finish, use "
                    f"another --workdir, or, if that run is gone, delete {self.path}"
                )
            log.warning("taking over the stale lock %s (%s)", self.path, why)
            aside = self.path.parent / f"{LOCK}.stale-{os.getpid()}"
            try:
                self.path.rename(aside)  # one of several runs taking over wins the rename
            except (FileNotFoundError, OSError):
                continue
            taken = json.loads(aside.read_text()) if aside.exists() else {}
            aside.unlink()
            if taken != info and taken:  # we moved a fresh lock of another run: it won
                raise WorkdirBusy(f"{self.path.parent} was just taken by another run (pid {taken.get('pid')})")
        raise WorkdirBusy(f"could not take {self.path}; retry")

    def _start_heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(self.HEARTBEAT):
                self.info["heartbeat"] = time.time()
                try:
                    self._write(exclusive=False)
                except OSError as e:
                    log.warning("could not refresh %s: %s", self.path, e)

        self._thread = threading.Thread(target=beat, name="workdir-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        info = self.holder()
        if info and info.get("pid") == self.info["pid"] and info.get("host") == self.info["host"]:
            self.path.unlink()

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
