"""The Python API as a notebook uses it: train, read, evaluate, sample and resume a run, with the
same parameters and records as the command line, bit for bit."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr

import ppl_dgm
from ppl_dgm import api
from ppl_dgm.cli import main
from ppl_dgm.config import OPTIONS
from ppl_dgm.errors import RunDirectoryError, UserError

# a small M2 on the 8x8 digits: 2 epochs of 4 steps
HPARAMS = {"z_dim": 4, "hidden": [16], "batch_norm": True}
OPTIONS_GIVEN = dict(dataset="digits", labels=50, epochs=2, steps_per_epoch=4, batch_size=32,
                     labelled_batch_size=16, seed=3, threads=1)
TIMING = ("seconds", "cpu_seconds", "eval_seconds", "eval_cpu_seconds", "wall_seconds")


def _cli_args(out) -> list[str]:
    args = ["train", "m2", "--out", str(out), "--no-progress"]
    for name, value in OPTIONS_GIVEN.items():
        args += [OPTIONS[name].flag, str(value)]
    for key, value in HPARAMS.items():
        args += ["--set", f"{key}={value}".replace(" ", "").replace("True", "true")]
    return args


def _same_records(a: ppl_dgm.Run, b: ppl_dgm.Run) -> None:
    ha, hb = a.history, b.history
    assert set(ha.data_vars) == set(hb.data_vars)
    for name in ha.data_vars:
        if name not in TIMING:
            np.testing.assert_array_equal(ha[name].values, hb[name].values, err_msg=name)
    ca, cb = a.config, b.config
    assert ca == cb
    pa, pb = a.params, b.params
    assert pa.keys() == pb.keys() and len(pa) > 0
    for key in pa:
        assert torch.equal(pa[key], pb[key]), key


def test_train_evaluate_sample_resume_as_a_notebook_and_as_the_cli(tmp_path, monkeypatch):
    from ppl_dgm import registry

    calls = []
    resolve_spec = registry.resolve_spec
    monkeypatch.setattr(registry, "resolve_spec", lambda *a, **k: calls.append(a) or
                        resolve_spec(*a, **k))
    run = ppl_dgm.train("m2", out=tmp_path / "api", hparams=HPARAMS, progress=False,
                        **OPTIONS_GIVEN)
    assert len(calls) == 1, calls  # the pair is found once per call
    monkeypatch.undo()
    assert isinstance(run, ppl_dgm.Run) and run.path == tmp_path / "api"
    assert isinstance(run.history, xr.Dataset) and run.history.sizes["epoch"] == 2
    assert run.summary["epochs"] == 2 and 0 <= run.summary["test_error"] <= 1
    assert isinstance(run.pair, torch.nn.Module)
    assert main(_cli_args(tmp_path / "cli")) == 0
    cli_run = ppl_dgm.load(tmp_path / "cli")
    _same_records(run, cli_run)

    record = run.evaluate(iw_samples=10, subset=20, chunk_size=10)
    assert record["n_test_evaluated"] == 20 and np.isfinite(record["test_log_likelihood"])
    assert record["test_error"] == pytest.approx(run.summary["test_error"])
    png = run.sample(per_class=2)
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"

    run = run.resume(epochs=3, progress=False)
    assert run.history.sizes["epoch"] == 3 and run.summary["epochs"] == 3
    assert (tmp_path / "api" / "stale-epoch-2").is_dir()  # the evaluation of epoch 2 set aside
    assert main(["train", "--resume", "--out", str(tmp_path / "cli"), "--epochs", "3",
                 "--no-progress", "--threads", "1"]) == 0
    _same_records(run, ppl_dgm.load(tmp_path / "cli"))


def test_bad_input_raises_one_line_and_writes_nothing(tmp_path):
    with pytest.raises(UserError, match="--epochs must be >= 1"):
        ppl_dgm.train("m2", epochs=0, out=tmp_path / "a")
    with pytest.raises(UserError, match=r"unknown options \['epoch'\]"):
        ppl_dgm.train("m2", epoch=3, out=tmp_path / "a")
    with pytest.raises(UserError, match="unknown --optimizer 'sgd'"):
        ppl_dgm.train("m2", optimizer="sgd", out=tmp_path / "a")
    with pytest.raises(UserError, match="train needs a model"):
        ppl_dgm.train(out=tmp_path / "a")
    with pytest.raises(RunDirectoryError, match="holds no run"):
        ppl_dgm.load(tmp_path)
    with pytest.raises(RunDirectoryError, match="holds no run to resume"):
        ppl_dgm.train(out=tmp_path, resume=True)
    assert not (tmp_path / "a").exists()


def test_a_pair_defined_where_no_process_can_import_it_is_refused():
    def build(hparams, data):  # a nested function: no later process could find it
        raise AssertionError("never built")

    with pytest.raises(UserError, match="save it in a file"):
        api.model_reference(build)
    from ppl_dgm.models.m2 import build as m2_build

    assert api.model_reference(m2_build) == "ppl_dgm.models.m2:build"


def test_help_documents_every_option_with_its_default():
    text = subprocess.run([sys.executable, "-c", "import ppl_dgm; help(ppl_dgm.train)"],
                          capture_output=True, text=True, check=True,
                          env={"PAGER": "cat", "PATH": ""}).stdout
    for name, opt in OPTIONS.items():
        line = next((ln for ln in text.splitlines() if ln.strip().startswith(f"{name} (")), None)
        assert line is not None, name
        assert "default " + ("unset" if opt.default is None else repr(opt.default)) in line, line


def test_import_ppl_dgm_imports_neither_torch_nor_jax():
    code = ("import sys, ppl_dgm; ppl_dgm.train; "
            "print('torch' in sys.modules, 'jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
