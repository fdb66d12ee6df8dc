"""``ppl-dgm compare`` on digits with a tiny budget: the files and their dimensions, resuming
without retraining, the report rebuilt from the runs, and refusal before any training."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import xarray as xr

from ppl_dgm.cli import main
from ppl_dgm.comparison import compare
from ppl_dgm.infer.objective_names import UnsupportedObjective

OPTIONS = {"dataset": "digits", "device": "cpu", "steps_per_epoch": 2, "batch_size": 10,
           "labelled_batch_size": 10}
HPARAMS = {"hidden": [8], "z_dim": 2}


def test_compare_writes_the_files_with_the_promised_dimensions(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "m2", "--objectives", "trace_enum,trace", "--seeds", "0,1", "--epochs", "2",
            "--dataset", "digits", "--device", "cpu", "--steps-per-epoch", "2", "--batch-size",
            "10", "--labelled-batch-size", "10", "--set", "hidden=[8]", "--set", "z_dim=2",
            "--iw-samples", "5", "--iw-subset", "10", "--grad-draws", "3", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    for name in ("comparison.nc", "comparison.csv", "comparison.md", "comparison.png"):
        assert (out / name).is_file(), name
    ds = xr.open_dataset(out / "comparison.nc").load()
    assert dict(ds.sizes) == {"arm": 2, "seed": 2, "epoch": 2}
    assert list(ds.arm.values) == ["m2/trace_enum/pyro", "m2/trace/pyro"]
    assert ds.validation_elbo.dims == ("arm", "seed", "epoch")
    assert ds.test_log_likelihood.dims == ("arm", "seed")
    assert np.isfinite(ds.wall_seconds.values).all() and (np.diff(ds.wall_seconds, axis=-1) > 0).all()
    for key in ("test_elbo", "test_log_likelihood", "test_error", "ms_per_step",
                "snr_q_median_init", "snr_p_median_end", "loss_var_end"):
        assert np.isfinite(ds[key].values).all(), key
    # the table's mean and sd over seeds are those of the Dataset
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    assert [r["arm"] for r in rows] == list(ds.arm.values)
    values = ds.test_elbo.sel(arm="m2/trace/pyro").values
    row = rows[1]
    assert float(row["test_elbo_mean"]) == pytest.approx(values.mean(), rel=1e-5)
    assert float(row["test_elbo_sd"]) == pytest.approx(values.std(ddof=1), rel=1e-4)
    assert "| m2/trace/pyro | 2 |" in (out / "comparison.md").read_text()
    # under --no-progress, a line per phase on stderr: evaluation is announced, not silent
    err = capsys.readouterr().err
    assert "compare: 4 of 4 runs to do" in err and "outside the budget" in err
    assert err.count("IW-5 log-likelihood of the first 10 test points") == 4
    assert err.count(": evaluated in ") == 4 and "about " in err
    # ms/step is the steady state: the second epoch's seconds over its steps, from history.nc
    from ppl_dgm import results

    for arm, folder in (("m2/trace/pyro", "m2__trace__pyro"), ("m2/trace_enum/pyro",
                                                                 "m2__trace_enum__pyro")):
        for seed in (0, 1):
            h = results.read_history(out / "runs" / folder / f"seed{seed}" / "history.nc")
            expected = 1000 * float(h["seconds"].values[1]) / 2  # epoch 2: steps 3 and 4
            assert ds.ms_per_step.sel(arm=arm, seed=seed).item() == pytest.approx(expected)
    # runs are ordinary run directories
    run = out / "runs" / "m2__trace__pyro" / "seed1"
    assert (run / "summary.json").is_file() and (run / "gradients.json").is_file()
    stamp = (run / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    # a second call trains nothing; the report is rebuilt from the runs alone
    assert main(argv) == 0 and (run / "summary.json").stat().st_mtime_ns == stamp
    (out / "comparison.nc").unlink()
    assert main(["compare", "--report-only", "--out", str(out)]) == 0
    again = xr.open_dataset(out / "comparison.nc").load()
    assert set(again.arm.values) == set(ds.arm.values)
    np.testing.assert_allclose(again.test_elbo.sel(arm=ds.arm.values).values, ds.test_elbo.values)


def test_compare_refuses_an_arm_before_training_any(tmp_path):
    with pytest.raises(UnsupportedObjective, match="renyi with m2"):
        compare(["m2"], ["trace_enum", "iwae:2"], epochs=1, out=tmp_path, options=OPTIONS,
                hparams=HPARAMS, iw_samples=0, grad_draws=0)
    assert not list(tmp_path.glob("runs/*/seed*/summary.json"))


def test_compare_cli_checks_its_options(tmp_path, capsys):
    assert main(["compare", "m2", "--objectives", "trace", "--out", str(tmp_path)]) == 2
    assert "budget" in capsys.readouterr().err
    assert main(["compare", "m2", "--objectives", "trace", "--epochs", "1", "--minutes", "1",
                 "--out", str(tmp_path)]) == 2
    assert main(["compare", "m2", "--objectives", "trace_enum,nope", "--epochs", "1",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown objective 'nope'" in err and err.count("ppl-dgm: error") == 2
