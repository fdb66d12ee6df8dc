"""Run-directory safety (backend-neutral): which files make a run, the training lock, resume identity.

- A directory *holds a run* when any of :data:`RUN_FILES` is present, whichever backend wrote it;
  such a directory is never trained into again without ``--resume``.
- :class:`RunLock` holds an exclusive ``fcntl.flock`` on ``RUN_DIR/.lock`` (holding the PID) for
  the life of a training: a second process training into the same directory stops with one line
  naming the PID of the first. The kernel drops the lock when its process ends, however it ends.
- :func:`identity_differences` compares two configurations on everything that defines a run; a
  resumed run may change only :data:`RESUMABLE_CHANGES` (how long it trains, where, the
  evaluation batch size, and when it checks for divergence). Everything else (model, backend,
  data, labels, seed, network, batch sizes, objective, optimiser and its learning-rate schedule,
  clipping) is refused on resume, because the checkpoint's optimiser state and the exactness of a
  resumed run depend on it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ppl_dgm import results
from ppl_dgm.errors import RunDirectoryError, RunLockedError

RUN_FILES = (results.CONFIG, "checkpoint.pt", "checkpoint.pkl", results.SUMMARY)
LOCK = ".lock"
#: configuration fields a resumed run may change (applied and reported)
RESUMABLE_CHANGES = ("epochs", "max_minutes", "budget_clock", "device", "eval_batch_size", "validate",
                     "threads", "finite_check", "eval_every")
# the same, as the command-line flags that a resumed run may change
RESUMABLE_FLAGS = ", ".join("--" + k.replace("_", "-") for k in RESUMABLE_CHANGES)


def run_files(run_dir: str | os.PathLike) -> list[str]:
    """The files of :data:`RUN_FILES` present in ``run_dir`` (either backend's)."""
    run_dir = Path(run_dir)
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def check_new_run(run_dir: str | os.PathLike) -> None:
    """Raise :class:`RunDirectoryError` when ``run_dir`` is a file or already holds a run."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirectoryError(f"--out {run_dir} is a file, not a folder", "pick another --out")
    present = run_files(run_dir)
    if present:
        raise RunDirectoryError(f"{run_dir} already holds a run ({', '.join(present)})",
                                "pass --resume to continue it, or pick another --out")


class RunLock:
    """``with RunLock(run_dir):`` -- create ``run_dir`` and hold its lock.

    Training holds it (``activity="training"``), and so do ``evaluate`` and ``sample`` while they
    write records into the directory (``"evaluating"``, ``"sampling"``): no two of them write in one
    run directory at once. The lock file holds the holder's PID and activity. Raises
    :class:`RunLockedError` (naming the holder's PID and activity) when another process holds it,
    and :class:`RunDirectoryError` when ``run_dir`` is a file or cannot be written.
    """

    def __init__(self, run_dir: str | os.PathLike, activity: str = "training") -> None:
        self.run_dir = Path(run_dir)
        self.activity = activity
        self._file: Any = None

    def __enter__(self) -> RunLock:
        import fcntl

        d = self.run_dir
        if d.exists() and not d.is_dir():
            raise RunDirectoryError(f"--out {d} is a file, not a folder", "pick another --out")
        try:
            d.mkdir(parents=True, exist_ok=True)
            f = open(d / LOCK, "a+")  # noqa: SIM115  (held open for the life of the lock)
        except (FileExistsError, NotADirectoryError) as err:
            raise RunDirectoryError(f"cannot make the run directory {d}: {err.strerror}",
                                    "pick another --out") from err
        except PermissionError as err:
            raise RunDirectoryError(f"cannot write in {d} (permission denied)",
                                    "pick a writable --out") from err
        except OSError as err:
            raise RunDirectoryError(f"cannot write in {d} ({err.strerror})",
                                    "pick another --out") from err
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            pid, _, activity = f.read().strip().partition("\n")
            f.close()
            fix = ("wait for it to finish (or stop it), or pick another --out"
                   if self.activity == "training" else "wait for it to finish (or stop it), then run "
                   "this again")
            raise RunLockedError(f"{d} is in use: process {pid or 'unknown'} is "
                                 f"{activity.strip() or 'training'} in it", fix) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n{self.activity}\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            import fcntl

            try:
                self._file.seek(0)
                self._file.truncate()
            except OSError:
                pass
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _normal(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration as plain JSON values (tuples become lists, numbers compare by value)."""
    return json.loads(json.dumps(results._jsonable(config), sort_keys=True))


def identity_differences(saved: dict[str, Any], new: dict[str, Any],
                         allowed: tuple[str, ...] = RESUMABLE_CHANGES) -> list[str]:
    """``"key: saved -> new"`` for every field outside ``allowed`` whose values differ.

    Fields missing from ``saved`` (a record of an older version) take ``TrainConfig``'s defaults.
    """
    from ppl_dgm.config import TrainConfig

    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else
                         f.default_factory() if f.default_factory is not dataclasses.MISSING
                         else None) for f in dataclasses.fields(TrainConfig)}
    a = _normal({**defaults, **saved})
    b = _normal({**defaults, **new})
    out = []
    for key in sorted(set(a) | set(b)):
        if key in allowed or a.get(key) == b.get(key):
            continue
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            for sub in sorted(set(a[key]) | set(b[key])):
                if a[key].get(sub) != b[key].get(sub):
                    out.append(f"{key}.{sub}: {a[key].get(sub)!r} -> {b[key].get(sub)!r}")
            continue
        out.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out
