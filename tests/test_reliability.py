"""Reliability: no run is lost or silently wrong, and every bad input gets one clear line.

One test per class of fault: run-directory safety (either backend, the training lock, two real
processes started together), divergence (a real blow-up in the middle of training), resume identity,
option / hyperparameter domains, data files, the faults that used to end in a traceback (a file as
--out, a full disk, a damaged checkpoint, sampling a classifier), SIGTERM / SIGINT followed by an
exact resume, the leftovers of killed writes, the umask, and the learning rate of each epoch.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ppl_dgm import api, cli, registry, results
from ppl_dgm.config import resolve
from ppl_dgm.data import load_dataset
from ppl_dgm.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_DIVERGED,
    EXIT_IO,
    EXIT_LOCKED,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USAGE,
)
from ppl_dgm.rundir import RunLock
from ppl_dgm.training.loop import Trainer

REPO = Path(__file__).resolve().parents[1]
# a tiny M2 on the digits: 3 steps per epoch
TINY = ["--dataset", "digits", "--labels", "50", "--batch-size", "50", "--labelled-batch-size", "20",
        "--steps-per-epoch", "3", "--device", "cpu", "--set", "z_dim=4", "--set", "hidden=[16]",
        "--no-progress", "--threads", "1"]
TINY_CONFIG = {"dataset": "digits", "labels": 50, "batch_size": 50, "labelled_batch_size": 20,
               "steps_per_epoch": 3, "device": "cpu"}
TINY_NET = {"z_dim": 4, "hidden": [16]}


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``ppl-dgm ARGV`` in this process: the exit status and what it wrote to stderr."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ppl-dgm: error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err, err
    return errors[0]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def state_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["pair"]


def assert_same_parameters(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ------------------------------------------------------------------------------------- run dirs
def test_a_run_of_either_backend_is_never_overwritten(tmp_path, capsys):
    """A NumPyro run's directory (checkpoint.pkl) refuses a Pyro training, and nothing in it
    changes; the same for a directory holding only a summary."""
    for files in ({"checkpoint.pkl": b"numpyro state"}, {"summary.json": b"{}"}):
        out = tmp_path / next(iter(files)).replace(".", "_")
        out.mkdir()
        config = resolve(registry.get("m2", "numpyro"), {}).to_dict()
        (out / "config.json").write_text(json.dumps(config))
        for name, data in files.items():
            (out / name).write_bytes(data)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        code, err = run_cli(["train", "m2", "--out", out, *TINY], capsys)
        assert code == EXIT_USAGE
        assert "already holds a run" in one_error_line(err) and "--resume" in err
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"} == before
        # the library refuses too, under the lock (not only the command line)
        trainer = Trainer(resolve(registry.get("m2"), TINY_CONFIG, TINY_NET), out, progress=False)
        with pytest.raises(ValueError, match="already holds a run"):
            trainer.fit()


def test_a_locked_run_directory_names_the_process_holding_it(tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(out):
        trainer = Trainer(resolve(registry.get("m2"), TINY_CONFIG, TINY_NET), out, progress=False)
        with pytest.raises(ValueError, match=f"process {os.getpid()} is training in it"):
            trainer.fit()
    assert not (out / "config.json").exists()
    with RunLock(out):  # released when its holder ends
        assert (out / ".lock").read_text().split() == [str(os.getpid()), "training"]


def test_two_trainings_started_into_one_directory(tmp_path):
    """Two real processes: one trains, the other stops with one line; the run is not mixed up."""
    out = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-m", "ppl_dgm.cli", "train", "m2", "--out", str(out),
                               "--epochs", "1", "--seed", str(seed), *TINY], env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (1, 2)]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in outcomes)
    assert codes[0] == 0 and codes[1] in (EXIT_USAGE, EXIT_LOCKED), outcomes
    loser = next(err for code, err in outcomes if code != 0)
    line = one_error_line(loser)
    assert "is training in it" in line or "already holds a run" in line
    winner_seed = 1 + next(i for i, (code, _) in enumerate(outcomes) if code == 0)
    config = results.read_json(out / "config.json")
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    summary = results.read_json(out / "summary.json")
    assert config["seed"] == checkpoint["config"]["seed"] == summary["seed"] == winner_seed


# ------------------------------------------------------------------------------------- divergence
def test_divergence_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """lr = 1 without clipping: the digits M2 trains 4 epochs, then its gradients become NaN."""
    out = tmp_path / "run"
    argv = ["train", "m2", *TINY, "--steps-per-epoch", "5", "--clip-norm", "0", "--epochs", "6"]
    code, err = run_cli([*argv, "--lr", "1", "--out", out], capsys)
    assert code == EXIT_DIVERGED
    line = one_error_line(err)
    summary = results.read_json(out / "summary.json")
    assert summary["status"] == "diverged"
    div = summary["divergence"]
    good = div["last_good_epoch"]
    assert 1 <= good < 6 and div["step"] >= good * 5
    assert f"at step {div['step']}" in line and f"checkpoint of epoch {good} is kept" in line
    # advice that fits the configuration: clipping is off here, so it is suggested
    assert "--lr" in div["advice"] and "--clip-norm" in div["advice"] and "--warmup-epochs" in line
    assert div["parameters"] or div["terms"]
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    assert checkpoint["epoch"] == good
    assert all(torch.isfinite(t).all() for t in checkpoint["pair"].values() if t.is_floating_point())
    assert len(results.read_history(out / "history.nc")["epoch"]) == good
    # the kept checkpoint is exactly the state of an uninterrupted run of `good` epochs
    code, _ = run_cli([*argv[:-1], str(good), "--lr", "1", "--out", tmp_path / "reference"], capsys)
    assert code == 0
    assert_same_parameters(checkpoint["pair"], state_of(tmp_path / "reference" / "checkpoint.pt"))
    # read once per epoch (no synchronisation per step): the bad step applied, found at the end of
    # its epoch, reported at the same step, and the same good checkpoint kept
    code, err = run_cli([*argv, "--lr", "1", "--finite-check", "epoch", "--out", tmp_path / "epoch"],
                        capsys)
    assert code == EXIT_DIVERGED
    late = results.read_json(tmp_path / "epoch" / "summary.json")["divergence"]
    assert (late["step"], late["last_good_epoch"]) == (div["step"], good)
    assert f"at step {div['step']}" in one_error_line(err) and late["parameters"]
    assert_same_parameters(checkpoint["pair"], state_of(tmp_path / "epoch" / "checkpoint.pt"))
    # with clipping on, the advice does not suggest turning it on
    trainer = Trainer(resolve(registry.get("m2"), {**TINY_CONFIG, "clip_norm": 5.0}, TINY_NET),
                      tmp_path / "x", progress=False)
    assert "--clip-norm" not in trainer.divergence_advice()


def test_numpyro_divergence_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """The NumPyro trainer, a real blow-up: Adam with lr = 1 and no clipping makes the digits M2's
    loss NaN after a few epochs (step 18, in epoch 4, on the development machine)."""
    import pickle

    import jax

    out = tmp_path / "run"
    argv = ["train", "m2", "--backend", "numpyro", *TINY, "--steps-per-epoch", "5",
            "--clip-norm", "0", "--epochs", "40", "--lr", "1"]
    code, err = run_cli([*argv, "--out", out], capsys)
    assert code == EXIT_DIVERGED, err
    line = one_error_line(err)
    summary = results.read_json(out / "summary.json")
    assert summary["status"] == "diverged" and summary["backend"] == "numpyro"
    div = summary["divergence"]
    good = div["last_good_epoch"]
    assert f"at step {div['step']}" in line and div["step"] >= good * 5
    assert div["parameters"] or div["terms"]
    assert 1 <= good < 40
    # the kept checkpoint is that of the last good epoch, every value finite
    assert f"checkpoint of epoch {good} is kept" in line
    with open(out / "checkpoint.pkl", "rb") as f:
        saved = pickle.load(f)
    assert saved["epoch"] == good
    leaves = jax.tree_util.tree_leaves(saved["svi_state"])
    assert leaves and all(np.isfinite(np.asarray(v)).all() for v in leaves
                          if np.issubdtype(np.asarray(v).dtype, np.floating))
    assert len(results.read_history(out / "history.nc")["epoch"]) == good


def test_a_non_finite_evaluation_stops_before_the_checkpoint(tmp_path):
    trainer = Trainer(resolve(registry.get("m2"), {**TINY_CONFIG, "epochs": 2}, TINY_NET),
                      tmp_path, progress=False)
    evaluate = trainer.evaluate_epoch

    def nan_in_second_epoch() -> dict:
        record = evaluate()
        if trainer.epoch == 1:
            record["validation_elbo"] = float("nan")
        return record

    trainer.evaluate_epoch = nan_in_second_epoch
    with pytest.raises(FloatingPointError, match="validation_elbo"):
        trainer.fit()
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 1
    assert results.read_json(tmp_path / "summary.json")["divergence"]["terms"] == ["validation_elbo"]


# ------------------------------------------------------------------------------------- resume
def test_resume_refuses_a_changed_identity_and_reads_the_model(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", "m2", "--out", out, "--epochs", "1", *TINY], capsys)[0] == 0
    saved = (out / "config.json").read_text()
    for extra, expected in ((["vae"], "model"), (["--lr", "0.1"], "lr: 0.0003 -> 0.1"),
                            (["--set", "z_dim=8"], "hparams.z_dim: 4 -> 8"),
                            (["--batch-size", "20"], "batch_size"), (["--seed", "3"], "seed"),
                            (["--backend", "numpyro"], "backend")):
        model = extra if extra == ["vae"] else []
        flags = [] if extra == ["vae"] else extra
        code, err = run_cli(["train", *model, "--resume", "--out", out, *flags], capsys)
        assert code == EXIT_USAGE, extra
        assert expected in one_error_line(err), (extra, err)
        assert (out / "config.json").read_text() == saved
    # without a model name: read from the run; --epochs may change (reported)
    code, err = run_cli(["train", "--resume", "--out", out, "--epochs", "2", "--no-progress"], capsys)
    assert code == 0, err
    assert "epochs 1 -> 2" in err
    assert results.read_json(out / "summary.json")["epochs"] == 2

    # a checkpoint of another run (another seed) beside this config.json is refused
    other = tmp_path / "other"
    assert run_cli(["train", "m2", "--out", other, "--epochs", "1", "--seed", "5", *TINY],
                   capsys)[0] == 0
    shutil.copy(other / "checkpoint.pt", out / "checkpoint.pt")
    code, err = run_cli(["train", "--resume", "--out", out, "--epochs", "3"], capsys)
    assert code == EXIT_USAGE and "belongs to another run" in one_error_line(err)
    assert "seed: 0 -> 5" in err or "seed: 5 -> 0" in err
    # a damaged (0-byte) checkpoint: one line, and evaluate says the same
    (out / "checkpoint.pt").write_bytes(b"")
    code, err = run_cli(["train", "--resume", "--out", out, "--epochs", "3"], capsys)
    assert code == EXIT_USAGE and "not a readable checkpoint" in one_error_line(err)
    code, err = run_cli(["evaluate", out, "--iw-samples", "0"], capsys)
    assert code == EXIT_USAGE and "not a readable checkpoint" in one_error_line(err)
    # nothing to resume
    code, err = run_cli(["train", "--resume", "--out", tmp_path / "empty"], capsys)
    assert code == EXIT_USAGE and "no run to resume" in one_error_line(err)


def test_a_numpyro_run_resumes_without_backend(tmp_path, capsys, monkeypatch):
    """``train --resume --out DIR`` reads the model and backend of a NumPyro run from its
    config.json (the trainer is replaced here: the choice is what is tested)."""
    out = tmp_path / "run"
    out.mkdir()
    saved = resolve(registry.get("vae", "numpyro"), {"epochs": 1, **TINY_CONFIG, "labels": None},
                    {"z_dims": [4, 2], "hidden_dims": [8, 8]}).to_dict()
    (out / "config.json").write_text(json.dumps(saved))
    (out / "checkpoint.pkl").write_bytes(b"state")
    chosen = {}

    class Recorder:
        def __init__(self, config, run_dir, progress=True, spec=None):
            chosen.update(config=config, run_dir=run_dir)

        def fit(self, resume=False):
            chosen["resume"] = resume
            return {"test_elbo": -1.0}

    monkeypatch.setattr(api, "trainer_class", lambda backend, *a: chosen.setdefault(
        "backend", backend) and Recorder)
    code, err = run_cli(["train", "--resume", "--out", out, "--epochs", "3"], capsys)
    assert code == 0, err
    assert chosen["backend"] == "numpyro" and chosen["resume"] is True
    config = chosen["config"]
    assert (config.model, config.backend, config.epochs) == ("vae", "numpyro", 3)
    assert config.hparams == saved["hparams"]
    # a Pyro training into it is refused
    code, err = run_cli(["train", "m2", "--out", out, *TINY], capsys)
    assert code == EXIT_USAGE and "already holds a run" in one_error_line(err)


def test_pyro_history_records_the_lr_each_epoch_used(tmp_path):
    config = resolve(registry.get("m2"), {**TINY_CONFIG, "epochs": 3, "lr": 0.004, "lr_decay": 0.5,
                                          "lr_decay_every": 1}, TINY_NET)
    Trainer(config, tmp_path, progress=False).fit()
    history = results.read_history(tmp_path / "history.nc")
    np.testing.assert_allclose(history["lr"].values, [0.004, 0.002, 0.001])


# ------------------------------------------------------------------------------------- domains
BAD_OPTIONS = [
    (["--clip-norm", "-1"], "--clip-norm"), (["--clip-value", "-0.5"], "--clip-value"),
    (["--alpha", "-2"], "--alpha"), (["--steps-per-epoch", "0"], "--steps-per-epoch"),
    (["--classify-samples", "0"], "--classify-samples"), (["--eval-batch-size", "0"], "--eval-batch-size"),
    (["--lr-decay", "1.5"], "--lr-decay"), (["--lr-decay", "0"], "--lr-decay"),
    (["--lr", "nan"], "--lr"), (["--lr", "-1"], "--lr"), (["--epochs", "0"], "--epochs"),
    (["--seed", "-1"], "--seed"), (["--labels", "-1"], "--labels"), (["--max-minutes", "0"], "--max-minutes"),
    (["--warmup-epochs", "inf"], "--warmup-epochs"), (["--free-bits", "-1"], "--free-bits"),
    (["--min-lr", "1"], "--min-lr"), (["--num-particles", "0"], "--num-particles"),
    (["--device", "gpu"], "device"), (["--validation-size", "-5"], "--validation-size"),
    (["--set", "z_dim=0"], "z_dim"), (["--set", "z_dim=abc"], "z_dim"), (["--set", "hidden=[500,"], "hidden"),
    (["--set", "hidden=[]"], "hidden"), (["--set", "hidden=[16,-2]"], "hidden"),
    (["--set", "batch_norm=3"], "batch_norm"), (["--set", "nosuch=1"], "nosuch"),
    (["--set", "z_dim"], "KEY=VALUE"),
    (["--data-option", "n_digits=2"], "n_digits"), (["--dataset", "nosuch"], "nosuch"),
    (["--dataset", "mnist-sequence", "--data-option", "n_digitz=2"], "n_digitz"),
    (["--dataset", "mnist-sequence", "--data-option", "n_digits=0"], "n_digits"),
]


@pytest.mark.parametrize("flags, named", BAD_OPTIONS, ids=[" ".join(f) for f, _ in BAD_OPTIONS])
def test_options_outside_their_domain_get_one_line(tmp_path, capsys, flags, named):
    out = tmp_path / "run"
    code, err = run_cli(["train", "m2", "--out", out, "--device", "cpu", *flags], capsys)
    assert code == EXIT_USAGE
    assert named in one_error_line(err)
    assert not out.exists()


# ------------------------------------------------------------------------------------- data files
def _digits_arrays() -> dict[str, np.ndarray]:
    data = load_dataset("digits")
    return {"x_train": data.x_train, "y_train": data.y_train, "x_test": data.x_test,
            "y_test": data.y_test}


def _faults() -> list[tuple[str, dict, str]]:
    d = _digits_arrays()
    nan_test = d["x_test"].copy()
    nan_test[3, 2, 2] = np.nan
    return [
        ("labels 1..10", {"y_train": d["y_train"] + 1, "y_test": d["y_test"] + 1}, "0..K-1"),
        ("labels 0.5..9.5", {"y_train": d["y_train"] + 0.5}, "non-integer"),
        ("label -1", {"y_train": np.where(d["y_train"] == 3, -1, d["y_train"])}, "negative"),
        ("unseen test class", {"y_test": np.where(d["y_test"] == 3, 10, d["y_test"])}, "absent"),
        ("NaN in x_test", {"x_test": nan_test}, "NaN"),
        ("empty x_train", {"x_train": d["x_train"][:0], "y_train": d["y_train"][:0]}, "empty"),
        ("widths differ", {"x_test": d["x_test"][:, :7, :7]}, "shape"),
        ("rows differ", {"y_train": d["y_train"][:-1]}, "label (row)"),
        ("string labels", {"y_train": d["y_train"].astype(str)}, "values"),
        ("0..255 floats", {"x_train": d["x_train"] * 255}, "[0, 1]"),
    ]


@pytest.mark.parametrize("fault", range(10))
def test_bad_data_files_get_one_line_naming_the_file(tmp_path, fault):
    label, change, expected = _faults()[fault]
    path = tmp_path / "data.npz"
    np.savez(path, **{**_digits_arrays(), **change})
    with pytest.raises(ValueError, match=None) as info:
        load_dataset(path)
    assert expected in str(info.value) and "data" in str(info.value), (label, info.value)
    assert "\n" not in str(info.value)


def test_files_that_are_not_data_sets(tmp_path, capsys):
    text = tmp_path / "text.npz"
    text.write_text("x_train,y_train\n1,2\n")
    missing = tmp_path / "missing_keys.npz"
    np.savez(missing, x_train=np.zeros((3, 4)), y_train=np.zeros(3))
    for path, expected in ((text, "not an .npz archive"), (missing, "lacks the keys"),
                           (tmp_path / "absent.npz", "does not exist")):
        code, err = run_cli(["train", "m2", "--dataset", path, "--out", tmp_path / "run",
                             "--device", "cpu", "--no-progress"], capsys)
        assert code == EXIT_USAGE
        line = one_error_line(err)
        assert expected in line and str(path) in line and "pickle" not in line
    assert not (tmp_path / "run" / "config.json").exists()


# ------------------------------------------------------------------------------------- faults
def test_out_is_a_file_or_not_writable(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    code, err = run_cli(["train", "m2", "--out", a_file, *TINY], capsys)
    assert code == EXIT_USAGE and "is a file" in one_error_line(err)
    code, err = run_cli(["train", "m2", "--out", a_file / "run", *TINY], capsys)
    assert code == EXIT_USAGE and one_error_line(err)
    assert a_file.read_text() == "keep me"

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)  # as a read-only folder does (root ignores modes)
    code, err = run_cli(["train", "m2", "--out", tmp_path / "ro" / "run", *TINY], capsys)
    assert code == EXIT_USAGE and "permission denied" in one_error_line(err)


def test_a_full_disk_keeps_the_previous_files(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert run_cli(["train", "m2", "--out", out, "--epochs", "1", *TINY], capsys)[0] == 0
    before = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "history.nc")}
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", full_disk)
    code, err = run_cli(["train", "--resume", "--out", out, "--epochs", "2"], capsys)
    assert code == EXIT_IO
    assert "no space left" in one_error_line(err).lower()
    monkeypatch.setattr(torch, "save", real_save)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not [p.name for p in out.iterdir() if p.name.endswith(".part")]


def test_sampling_a_classifier_or_into_a_directory(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(resolve(registry.get("rnn-spn"), {}).to_dict()))
    code, err = run_cli(["sample", run], capsys)
    assert code == EXIT_USAGE and "no images" in one_error_line(err)
    code, err = run_cli(["sample", run, "--output", tmp_path], capsys)
    assert code == EXIT_USAGE and "is a directory" in one_error_line(err)


# ------------------------------------------------------------------------------------- signals
def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.05)


SIGNAL_RUN = ["--epochs", "3", *TINY, "--steps-per-epoch", "12", "--batch-size", "20"]
SIGNAL_STEPS = 12  # steps per epoch of SIGNAL_RUN

# ``python -m ppl_dgm.cli ARGS`` in which, after optimiser step AT, the training writes MARKER and
# waits until a signal has arrived (so that the signal the test sends lands after exactly that step)
WAIT_AFTER_STEP = """
import runpy, sys, time
from pathlib import Path
from ppl_dgm.training.loop import Trainer
marker, at = Path(sys.argv[1]), int(sys.argv[2])
step = Trainer.train_step
def train_step(self, *args):
    stats = step(self, *args)
    if self.step == at:
        marker.touch()
        while getattr(self, "_stop_signal", None) is None:
            time.sleep(0.01)
    return stats
Trainer.train_step = train_step
sys.argv = ["ppl-dgm", *sys.argv[3:]]
runpy.run_module("ppl_dgm.cli", run_name="__main__")
"""


def history_of(run: Path) -> dict[str, np.ndarray]:
    """Every per-epoch record of ``history.nc`` except the timings."""
    ds = results.read_history(run / "history.nc")
    timings = ("seconds", "cpu_seconds", "eval_seconds", "eval_cpu_seconds")
    return {name: ds[name].values for name in ds.data_vars if name not in timings}


def assert_same_history(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("straight") / "run"
    assert cli.main(["train", "m2", "--out", str(out), *SIGNAL_RUN]) == 0
    return state_of(out / "checkpoint.pt"), history_of(out)


def test_sigterm_mid_epoch_checkpoints_exits_143_and_resumes_exactly(tmp_path, capsys,
                                                                     uninterrupted):
    """A real SIGTERM from another process after step 17 (the 5th of epoch 2): the checkpoint of
    those 17 steps is written, and the resumed run ends with the uninterrupted run's parameters and
    history, the interrupted epoch's mean loss included."""
    out, marker, at = tmp_path / "run", tmp_path / "marker", SIGNAL_STEPS + 5
    proc = subprocess.Popen([sys.executable, "-c", WAIT_AFTER_STEP, str(marker), str(at), "train",
                             "m2", "--out", str(out), *SIGNAL_RUN], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    err = proc.stderr.read()
    assert code == EXIT_SIGTERM, err
    line = one_error_line(err)
    assert "SIGTERM" in line and "--resume" in line and f"stopped at step {at}" in line
    assert "checkpoint is written (5 of the epoch's 12 steps done)" in line
    assert not (out / "summary.json").exists()
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == at and at % SIGNAL_STEPS != 0
    assert checkpoint["epoch"] == 1 and checkpoint["in_epoch"]["steps_done"] == 5
    assert len(results.read_history(out / "history.nc")["epoch"]) == 1
    code, err = run_cli(["train", "--resume", "--out", out, "--no-progress"], capsys)
    assert code == 0, err
    assert_same_parameters(state_of(out / "checkpoint.pt"), uninterrupted[0])
    assert_same_history(history_of(out), uninterrupted[1])
    assert torch.load(out / "checkpoint.pt", weights_only=False)["in_epoch"] is None


def test_sigint_after_an_epochs_last_step_then_exact_resume(tmp_path, capsys, uninterrupted,
                                                            monkeypatch):
    """SIGINT (sent in-process) after the last step of epoch 2, before its evaluation: the
    checkpoint holds the 12 steps of the unfinished epoch; resuming evaluates and records it, then
    trains epoch 3 as the uninterrupted run did. A smaller --epochs is refused on resume."""
    out, at = tmp_path / "run", 2 * SIGNAL_STEPS
    step = Trainer.train_step

    def train_step(self, *args):
        stats = step(self, *args)
        if self.step == at:
            os.kill(os.getpid(), signal.SIGINT)
        return stats

    monkeypatch.setattr(Trainer, "train_step", train_step)
    code, err = run_cli(["train", "m2", "--out", out, *SIGNAL_RUN], capsys)
    assert code == EXIT_SIGINT
    assert "SIGINT" in one_error_line(err) and f"stopped at step {at}" in err
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    assert checkpoint["epoch"] == 1 and checkpoint["step"] == at
    assert checkpoint["in_epoch"]["steps_done"] == SIGNAL_STEPS
    monkeypatch.setattr(Trainer, "train_step", step)
    code, err = run_cli(["train", "--resume", "--out", out, "--epochs", "1"], capsys)
    assert code == EXIT_USAGE and "--epochs 2 or more" in one_error_line(err)
    code, err = run_cli(["train", "--resume", "--out", out], capsys)
    assert code == 0, err
    assert_same_parameters(state_of(out / "checkpoint.pt"), uninterrupted[0])
    assert_same_history(history_of(out), uninterrupted[1])


def test_numpyro_stopped_mid_epoch_resumes_exactly(tmp_path, monkeypatch):
    """The NumPyro trainer: SIGTERM after step 6 (the 2nd of epoch 2), then a new trainer resumes;
    parameters, optimiser state and history equal those of an uninterrupted run."""
    import pickle

    import jax

    from ppl_dgm.errors import Interrupted
    from ppl_dgm.training.numpyro_loop import NumPyroTrainer

    def config():
        return resolve(registry.get("m2", "numpyro"), {**TINY_CONFIG, "epochs": 2,
                                                       "steps_per_epoch": 4}, TINY_NET)

    NumPyroTrainer(config(), tmp_path / "straight", progress=False).fit()
    step = NumPyroTrainer.train_step

    def train_step(self, *args):
        out = step(self, *args)
        if self.step == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(NumPyroTrainer, "train_step", train_step)
    with pytest.raises(Interrupted, match="2 of the epoch's 4 steps done") as info:
        NumPyroTrainer(config(), tmp_path / "run", progress=False).fit()
    assert info.value.exit_code == EXIT_SIGTERM
    monkeypatch.setattr(NumPyroTrainer, "train_step", step)
    with open(tmp_path / "run" / "checkpoint.pkl", "rb") as f:
        saved = pickle.load(f)
    assert (saved["epoch"], saved["step"], saved["in_epoch"]["steps_done"]) == (1, 6, 2)
    NumPyroTrainer(config(), tmp_path / "run", progress=False).fit(resume=True)
    states = []
    for run in ("straight", "run"):
        with open(tmp_path / run / "checkpoint.pkl", "rb") as f:
            states.append(pickle.load(f)["svi_state"])
    a, b = (jax.tree_util.tree_leaves(state) for state in states)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert_same_history(history_of(tmp_path / "run"), history_of(tmp_path / "straight"))


# ------------------------------------------------------------------------------------- leftovers
def test_leftover_temporaries_are_cleaned_and_files_follow_the_umask(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", "m2", "--out", out, "--epochs", "1", *TINY], capsys)[0] == 0
    leftovers = [".checkpoint.pt.k3j_x9ab", ".summary.json.abcd1234.part"]
    for name in leftovers:
        (out / name).write_bytes(b"x" * 100)
    (out / ".keep.me").write_text("not a temporary")
    assert run_cli(["train", "--resume", "--out", out, "--epochs", "2"], capsys)[0] == 0
    assert not any((out / name).exists() for name in leftovers)
    assert (out / ".keep.me").exists()

    old = os.umask(0o027)
    try:
        results.write_json(tmp_path / "record.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "record.json").stat().st_mode & 0o777 == 0o640
    assert (out / "config.json").stat().st_mode & 0o777 == 0o666 & ~old


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for code in ("1", "2", "3", "4", "5", "6", "130", "141", "143"):
        assert f"  {code} " in text


def test_a_closed_standard_output_stops_quietly(tmp_path):
    """``ppl-dgm models | head``: the reader has gone; no error line, exit 141 (128 + SIGPIPE)."""
    read, write = os.pipe()
    os.close(read)  # every write to the pipe now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "ppl_dgm.cli", "models"], stdout=write,
                              stderr=subprocess.PIPE, text=True, env=env(), timeout=300)
    finally:
        os.close(write)
    assert proc.returncode == EXIT_BROKEN_PIPE == 128 + signal.SIGPIPE
    assert proc.stderr == ""


def test_evaluate_and_sample_wait_for_a_training(tmp_path, capsys):
    """While a process holds the run's lock (as a training does), evaluate and sample into the run
    directory stop with one line naming it, and write nothing; sampling elsewhere only reads."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(resolve(registry.get("m2"), TINY_CONFIG,
                                                        TINY_NET).to_dict()))
    before = sorted(p.name for p in run.iterdir())
    with RunLock(run):
        for argv in (["evaluate", run, "--iw-samples", "0"], ["sample", run]):
            code, err = run_cli(argv, capsys)
            assert code == EXIT_LOCKED
            assert f"process {os.getpid()} is training in it" in one_error_line(err), argv
        assert sorted(p.name for p in run.iterdir() if p.name != ".lock") == before
        # a grid written elsewhere takes no lock (it fails here only for want of a checkpoint)
        code, err = run_cli(["sample", run, "--output", tmp_path / "grid.png"], capsys)
        assert code == EXIT_USAGE and "in use" not in err and "checkpoint" in one_error_line(err)
    # released: evaluate gets past the lock, and holds it itself while it works
    code, err = run_cli(["evaluate", run, "--iw-samples", "0"], capsys)
    assert code == EXIT_USAGE and "checkpoint" in one_error_line(err)
    with RunLock(run, "evaluating"):
        code, err = run_cli(["train", "--resume", "--out", run], capsys)
        assert code == EXIT_LOCKED and "is evaluating in it" in one_error_line(err)
