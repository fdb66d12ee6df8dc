"""Run-directory safety (backend-neutral): which files make a run, the training lock, resume identity.

- A directory *holds a run* when any of :data:`RUN_FILES` is present, whichever backend wrote it;
  such a directory is never trained into again without ``--resume``.
- :class:`RunLock` holds an exclusive ``fcntl.flock`` on ``RUN_DIR/.lock`` (holding the PID) for
  the life of a training: a second process training into the same directory stops with one line
  naming the PID of the first. The kernel drops the lock when its process ends, however it ends.
- :func:`identity_differences` compares two configurations on everything that defines a run; a
  resumed run may change only :data:`RESUMABLE_CHANGES` (the options marked resumable in
  :data:`ppl_dgm.config.OPTIONS`: how long it trains and its budget's clock, where and with how
  many threads, when and in what batches it evaluates, Pyro's checks, and when it checks for
  divergence). Everything else (model, backend,
  data, labels, seed, network, batch sizes, objective, optimiser and its learning-rate schedule,
  clipping) is refused on resume, because the checkpoint's optimiser state and the exactness of a
  resumed run depend on it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ppl_dgm import results
from ppl_dgm.config import OPTIONS, RESUMABLE, defaults
from ppl_dgm.errors import RunDirectoryError, RunLockedError

RUN_FILES = (results.CONFIG, "checkpoint.pt", "checkpoint.pkl", results.SUMMARY)
LOCK = ".lock"
#: configuration fields a resumed run may change (applied and reported): the options so marked
RESUMABLE_CHANGES = RESUMABLE
# the same, as the command-line flags that a resumed run may change
RESUMABLE_FLAGS = ", ".join(OPTIONS[k].flag or k for k in RESUMABLE_CHANGES)


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


#: hyperparameters added to registered pairs after runs were recorded without them, with the value
#: that gives those runs' behaviour (a record lacking one takes this value)
HPARAMS_ADDED = {"train_q_a": True}


def _normal(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration as plain JSON values (tuples become lists, numbers compare by value)."""
    return json.loads(json.dumps(results._jsonable(config), sort_keys=True))


def identity_differences(saved: dict[str, Any], new: dict[str, Any],
                         allowed: tuple[str, ...] = RESUMABLE_CHANGES) -> list[str]:
    """``"key: saved -> new"`` for every field outside ``allowed`` whose values differ.

    Fields missing from ``saved`` (a record of an older version) take ``TrainConfig``'s defaults,
    and hyperparameters missing from its ``hparams`` those of :data:`HPARAMS_ADDED`.
    """
    a = _normal({**defaults(), **saved})
    b = _normal({**defaults(), **new})
    for config in (a, b):
        if isinstance(config.get("hparams"), dict) and isinstance(b.get("hparams"), dict):
            for key, value in HPARAMS_ADDED.items():
                if key in b["hparams"] or key in a.get("hparams", {}):
                    config["hparams"].setdefault(key, value)
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


# ------------------------------------------------------------------------------------- resuming
def epochs_trained(run_dir: str | os.PathLike) -> int | None:
    """The epochs a run has completed, as its records say: the larger of ``summary.json``'s
    ``epochs`` and the last epoch of ``history.nc``; None when neither is readable."""
    run_dir = Path(run_dir)
    found = []
    try:
        epochs = results.read_json(run_dir / results.SUMMARY).get("epochs")
        if isinstance(epochs, int):
            found.append(epochs)
    except (OSError, ValueError, AttributeError):
        pass
    if (run_dir / results.HISTORY).is_file():
        try:
            history = results.read_history(run_dir / results.HISTORY)
            if "epoch" in history.coords and history.sizes.get("epoch"):
                found.append(int(history["epoch"].max()))
        except (OSError, ValueError, KeyError):
            pass
    return max(found) if found else None


def check_resume_epochs(run_dir: str | os.PathLike, epochs: int) -> None:
    """Refuse (:class:`RunDirectoryError`, before anything is written) ``--resume --epochs N`` with
    N below the epochs the run has already done: its records would say N beside a history of more.
    N equal to them is allowed (nothing is left to train)."""
    done = epochs_trained(run_dir)
    if done is not None and epochs < done:
        raise RunDirectoryError(
            f"--resume --epochs {epochs}: the run in {run_dir} has already trained {done} epochs",
            f"give --epochs {done + 1} or more to train further, or leave --epochs out (a run is "
            f"never shortened: its checkpoint is of epoch {done})")


#: Records of a trained checkpoint written by ``evaluate`` and ``sample``: after ``--resume`` trains
#: further, they describe the earlier checkpoint (:func:`set_aside_stale_records`).
EVALUATION_RECORDS = (results.EVALUATION, "iw_per_example.nc", "samples.png")
CHECKPOINTS = ("checkpoint.pt", "checkpoint.pkl")


def record_stamps(run_dir: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """``{name: (mtime_ns, size)}`` of the checkpoints and :data:`EVALUATION_RECORDS` present."""
    stamps = {}
    for name in CHECKPOINTS + EVALUATION_RECORDS:
        try:
            st = (Path(run_dir) / name).stat()
        except OSError:
            continue
        stamps[name] = (st.st_mtime_ns, st.st_size)
    return stamps


def set_aside_stale_records(run_dir: str | os.PathLike,
                            before: dict[str, tuple[int, int]]) -> Path | None:
    """After a resumed training: when the checkpoint changed since ``before``
    (:func:`record_stamps` taken before it), move the :data:`EVALUATION_RECORDS` left unchanged
    since then into ``RUN_DIR/stale-epoch-E/`` (E: the epochs ``evaluation.json`` evaluated, else
    the epochs before the resume), and drop the copy of that evaluation from ``summary.json``.
    They described the earlier checkpoint and would disagree with the new summary. Returns the
    folder (None when nothing was moved). Holds the run's lock; files are moved, never deleted."""
    run_dir = Path(run_dir)
    now = record_stamps(run_dir)
    if not any(now.get(name) != before.get(name) for name in CHECKPOINTS if name in now):
        return None  # nothing was trained: the records still describe the checkpoint
    stale = [name for name in EVALUATION_RECORDS if name in before and now.get(name) == before[name]]
    if not stale:
        return None
    epochs = None
    if results.EVALUATION in stale:
        try:
            epochs = results.read_json(run_dir / results.EVALUATION).get("epochs")
        except (OSError, ValueError, AttributeError):
            epochs = None
    folder = run_dir / (f"stale-epoch-{epochs}" if isinstance(epochs, int) else "stale-before-resume")
    n = 1
    while folder.exists():
        n += 1
        folder = folder.with_name(f"{folder.name.split('.')[0]}.{n}")
    with RunLock(run_dir, "setting aside stale records"):
        folder.mkdir()
        for name in stale:
            os.replace(run_dir / name, folder / name)
        summary_path = run_dir / results.SUMMARY
        try:
            summary = results.read_json(summary_path)
        except (OSError, ValueError):
            summary = None
        if isinstance(summary, dict) and isinstance(summary.get("evaluation"), dict) and \
                summary["evaluation"].get("epochs") != summary.get("epochs"):
            summary.pop("evaluation")
            results.write_json(summary_path, summary)
    return folder
