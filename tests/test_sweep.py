"""``ppl-dgm sweep``: a grid of runs on local worker processes, retried when killed, aggregated;
``--threads``."""

import json
import os
import statistics
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ppl_dgm import results
from ppl_dgm import sweeps as sweep
from ppl_dgm.cli import main
from ppl_dgm.errors import EXIT_RUNS_FAILED
from ppl_dgm.threads import SINGLE_THREAD_XLA, _xla_flags, apply_threads, thread_environment

# `python crash_once.py MARKER train ...`: the run of seed 1 kills itself (SIGKILL) right after the
# records of its first epoch, once (MARKER remembers it); every other run trains normally
CRASH_ONCE = """
import os, signal, sys
from pathlib import Path

from ppl_dgm.training import common

marker, argv = Path(sys.argv[1]), sys.argv[2:]
if argv[argv.index("--seed") + 1] == "1" and not marker.exists():
    write_records = common.EpochLoop.write_records

    def killed(self):
        write_records(self)
        marker.write_text("killed after epoch 1")
        os.kill(os.getpid(), signal.SIGKILL)

    common.EpochLoop.write_records = killed

from ppl_dgm.cli import main

sys.exit(main(argv))
"""

RUN = ["--dataset", "digits", "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "50",
       "--labelled-batch-size", "20", "--device", "cpu", "--set", "z_dim=4", "--set", "hidden=[16]"]


def test_sweep_retries_a_killed_run_and_aggregates(tmp_path, monkeypatch, capsys):
    marker, wrapper = tmp_path / "killed", tmp_path / "crash_once.py"
    wrapper.write_text(CRASH_ONCE)
    monkeypatch.setattr(sweep, "TRAIN_COMMAND", [str(wrapper), str(marker), "train"])
    out = tmp_path / "sweep"
    argv = ["sweep", "m2", "--seeds", "0-2", "--labels", "50", *RUN, "--workers", "2",
            "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert marker.exists()
    assert "run labels50/seed1 failed (exit code -9, attempt 1)" in captured.err
    assert "retrying from its checkpoint" in captured.err

    ds = xr.open_dataset(out / sweep.SWEEP_NC, engine="h5netcdf").load()
    assert ds["seed"].values.tolist() == [0, 1, 2] and ds["labels"].values.tolist() == [50]
    assert ds["status"].values.ravel().tolist() == ["ok"] * 3
    assert ds["attempts"].sel(labels=50).values.tolist() == [1, 2, 1]
    # the killed run was continued from its checkpoint to the end: both epochs are recorded
    assert ds["history_loss"].sel(labels=50, seed=1).notnull().sum() == 2
    assert ds["epochs"].sel(labels=50).values.tolist() == [2, 2, 2]

    # the table against the runs' own summaries, averaged by hand
    summaries = [results.read_json(out / f"labels50/seed{s}" / results.SUMMARY) for s in range(3)]
    errors = [s["test_error"] for s in summaries]
    np.testing.assert_allclose(ds["test_error"].sel(labels=50).values, errors)
    table = pd.read_csv(out / "sweep.csv")
    row = table[(table["labels"] == 50) & (table["metric"] == "test_error")].iloc[0]
    assert row["n"] == 3
    np.testing.assert_allclose([row["mean"], row["std"]],
                               [statistics.mean(errors), statistics.stdev(errors)])
    md = (out / "sweep.md").read_text()
    assert f"{100 * statistics.mean(errors):.2f} ± {100 * statistics.stdev(errors):.2f}" in md
    assert "Retried runs: labels50/seed1" in md
    # every run used one thread, and says so
    assert all(s["config"]["threads"] == 1 and s["threads"]["torch_threads"] == 1 for s in summaries)
    record = results.read_json(out / sweep.SWEEP_JSON)
    assert record["status"] == "done" and record["runs"]["labels50/seed1"]["exit_codes"] == [-9, 0]

    # called again, the sweep starts no run: all are finished
    monkeypatch.setattr(sweep, "run_command", lambda *a: pytest.fail("a finished run was started"))
    assert main(argv) == 0
    assert "(3 finished before, skipped)" in capsys.readouterr().out


def test_sweep_keeps_runs_that_fail_twice(tmp_path, monkeypatch, capsys):
    # a "training" that always fails at once: each run is tried twice, then recorded as failed
    monkeypatch.setattr(sweep, "TRAIN_COMMAND", ["-c", "import sys; sys.exit(3)"])
    out = tmp_path / "sweep"
    code = main(["sweep", "m2", "--seeds", "4,7", *RUN, "--workers", "2", "--out", str(out)])
    assert code == EXIT_RUNS_FAILED  # not 1, the status of a bug
    err = capsys.readouterr().err
    assert err.count("failed (exit code 3, attempt 1)") == 2 and "giving up" in err
    assert "2 run(s) failed after retrying: seed4, seed7" in err
    ds = xr.open_dataset(out / sweep.SWEEP_NC, engine="h5netcdf").load()
    assert ds["seed"].values.tolist() == [4, 7]
    assert ds["status"].values.tolist() == ["failed", "failed"]
    assert ds["attempts"].values.tolist() == [2, 2]
    assert "seed4: failed after 2 attempt(s)" in (out / "sweep.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "3-1"], "--seeds '3-1' is not a list of seeds"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--grid", "depth=1,2"], "--grid depth: neither a train option nor a hyperparameter"),
    (["--labels", "20,20"], "--labels '20,20' repeats a value"),
    (["--ray", "auto"], "--ray needs Ray"),
])
def test_sweep_bad_options(tmp_path, capsys, argv, message):
    if argv[0] == "--ray":
        try:
            import ray  # noqa: F401
            pytest.skip("Ray is installed: the missing-Ray message cannot be shown")
        except ImportError:
            pass
    out = tmp_path / "sweep"
    assert main(["sweep", "m2", *argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_parse_seeds():
    assert sweep.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert sweep.parse_seeds("0-2,10,1") == [0, 1, 2, 10]


def test_threads_flags(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2 "
                                    "--xla_cpu_multi_thread_eigen=true")
    flags = _xla_flags(os.environ["XLA_FLAGS"], 1).split()
    assert flags == ["--xla_force_host_platform_device_count=2", *SINGLE_THREAD_XLA]
    assert _xla_flags(" ".join(flags), 0) == "--xla_force_host_platform_device_count=2"
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setenv("MKL_NUM_THREADS", "4")
    apply_threads(1)
    assert os.environ["OMP_NUM_THREADS"] == "1" and torch.get_num_threads() == 1
    assert "--xla_force_host_platform_device_count=2" in os.environ["XLA_FLAGS"]


def test_train_rejects_negative_threads(tmp_path, capsys):
    assert main(["train", "m2", "--threads", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "--threads" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_one_thread_gives_xla_a_pool_of_one(tmp_path):
    """XLA sizes its CPU pool by the CPUs usable when its client starts: ``start_xla(1)`` (what a
    NumPyro trainer calls with ``--threads 1``) makes it one thread, then gives every thread of the
    process all CPUs back. A fresh interpreter: this process's JAX has started long ago."""
    pytest.importorskip("jax")
    code = ("import os, json; from ppl_dgm.threads import start_xla, xla_pool_threads; "
            "full = os.sched_getaffinity(0); start_xla(1); import jax, jax.numpy as jnp; "
            "jax.block_until_ready(jax.jit(lambda a: (a @ a).sum())(jnp.ones((64, 64)))); "
            "tasks = os.listdir('/proc/self/task'); "
            "print(json.dumps({'pool': xla_pool_threads(), 'cpus': len(full), 'restored': "
            "all(os.sched_getaffinity(int(t)) == full for t in tasks)}))")
    if not hasattr(os, "sched_getaffinity") or not os.path.isdir("/proc/self/task"):
        pytest.skip("needs Linux (sched_setaffinity and /proc)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **thread_environment(1)})
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["restored"], got
    assert got["pool"] == 1 or (got["cpus"] == 1 and got["pool"] <= 1), got
