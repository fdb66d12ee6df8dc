"""``ppl-dgm reproduce``: the report folder holds the promised files, and a second call with a larger
budget continues the same run (epochs grow, the first epochs' records are kept) instead of
restarting it. Smoke setting: digits and tiny networks (listed as deviations in the report)."""

from __future__ import annotations

import json

import pytest

from ppl_dgm import results
from ppl_dgm.cli import main
from ppl_dgm.reproduction import CLAIMS, PAPER, available_claims, choose_backend

SMOKE = ["--dataset", "digits", "--set", "hidden=[8]", "--set", "z_dim=4",
         "--config", "steps_per_epoch=2", "--config", "classify_samples=1",
         "--config", "validation_size=100", "--device", "cpu", "--backend", "pyro",
         "--no-progress"]


def test_reproduce_writes_the_report_and_continues_with_a_larger_budget(tmp_path):
    out = tmp_path / "m2"
    # a budget far below one epoch: the run stops after its first epoch
    assert main(["reproduce", "m2-mnist100", "--minutes", "0.0001", "--out", str(out),
                 "--config", "epochs=3", *SMOKE]) == 0
    for name in ("report.md", "report.json", "learning_curves.png"):
        assert (out / name).is_file(), name
    run_dir = out / "runs" / "m2-pyro-seed0"
    first = results.read_history(run_dir / results.HISTORY)
    assert list(first["epoch"].values) == [1]
    report = json.loads((out / "report.json").read_text())
    assert report["claim"] == "m2-mnist100" and report["metric"] == "test_error"
    row = report["results"]["m2"]
    assert row["backend"] == "pyro" and row["epochs"] == [1]
    assert row["paper"] == PAPER["m2"][0] == 0.1197
    summary = results.read_json(run_dir / results.SUMMARY)
    assert row["values"] == [summary["test_error"]]
    assert row["gap_to_paper"] == pytest.approx(summary["test_error"] - 0.1197)
    assert "data set digits instead of mnist" in report["deviations"]
    md = (out / "report.md").read_text()
    assert "Not the paper's setting" in md and "11.97%" in md and "learning_curves.png" in md
    assert "ppl-dgm reproduce m2-mnist100 --minutes 0.0001" in md

    # the same budget again: nothing is trained, the report is rewritten
    assert main(["reproduce", "m2-mnist100", "--minutes", "0.0001", "--out", str(out),
                 "--config", "epochs=3", *SMOKE]) == 0
    assert list(results.read_history(run_dir / results.HISTORY)["epoch"].values) == [1]

    # a larger budget continues the run: epochs 2 and 3 follow epoch 1, which is kept as it was
    assert main(["reproduce", "m2-mnist100", "--minutes", "5", "--out", str(out),
                 "--config", "epochs=3", *SMOKE]) == 0
    second = results.read_history(run_dir / results.HISTORY)
    assert list(second["epoch"].values) == [1, 2, 3]
    assert float(second["test_error"][0]) == float(first["test_error"][0])
    assert float(second["seconds"][0]) == float(first["seconds"][0])
    report = json.loads((out / "report.json").read_text())
    assert report["results"]["m2"]["epochs"] == [3]
    assert [c["minutes"] for c in report["commands"]] == [0.0001, 0.0001, 5]
    assert results.read_json(run_dir / results.CONFIG)["max_minutes"] == 5


def test_log_likelihood_claim_on_a_subset_of_the_test_set(tmp_path):
    """``--iw-subset``: the report's figure is the evaluation of the first N test points, labelled
    so; the same call reuses that evaluation, another N evaluates again."""
    out = tmp_path / "lvae"
    argv = ["reproduce", "lvae-mnist", "--minutes", "0.0001", "--out", str(out), "--models", "lvae",
            "--dataset", "digits", "--set", "z_dims=[2]", "--set", "hidden_dims=[8]",
            "--config", "steps_per_epoch=2", "--config", "validation_size=100", "--device", "cpu",
            "--backend", "pyro", "--no-progress", "--iw-samples", "20"]
    assert main([*argv, "--iw-subset", "30"]) == 0
    evaluation_path = out / "runs" / "lvae-pyro-seed0" / results.EVALUATION
    evaluation = results.read_json(evaluation_path)
    assert evaluation["n_test_evaluated"] == 30 and evaluation["iw_samples"] == 20
    report = json.loads((out / "report.json").read_text())
    assert report["figure"] == "log-likelihood (20 samples, first 30 test points)"
    assert report["results"]["lvae"]["values"] == [evaluation["test_log_likelihood"]]
    assert "--iw-subset 30" in report["commands"][-1]["command"]
    stamp = evaluation_path.stat().st_mtime_ns
    assert main([*argv, "--iw-subset", "30"]) == 0
    assert evaluation_path.stat().st_mtime_ns == stamp  # reused, not evaluated again
    assert main([*argv, "--iw-subset", "40"]) == 0
    assert results.read_json(evaluation_path)["n_test_evaluated"] == 40
    # --bn-stats train: evaluated again (the running averages' figure is not reused), said so
    stamp = evaluation_path.stat().st_mtime_ns
    assert main([*argv, "--iw-subset", "40", "--bn-stats", "train"]) == 0
    evaluation = results.read_json(evaluation_path)
    assert evaluation_path.stat().st_mtime_ns != stamp and evaluation["bn_stats"] == "train"
    report = json.loads((out / "report.json").read_text())
    assert report["figure"] == ("log-likelihood (20 samples, first 40 test points, batch-norm "
                                "statistics from the training set)")
    assert report["results"]["lvae"]["values"] == [evaluation["test_log_likelihood"]]
    assert "--bn-stats train" in report["commands"][-1]["command"]


def test_claims_backends_and_bad_input(tmp_path, capsys):
    assert set(CLAIMS) >= {"m2-mnist100", "adgm-mnist100", "sdgm-mnist100", "lvae-mnist",
                           "rnn-spn-sequences", "cagem-mnist"}
    assert "m2-mnist100" in available_claims()
    empty = tmp_path / "no-measurements"
    assert choose_backend("auto", "cuda", "m2", empty) == "numpyro"
    assert choose_backend("auto", "cpu", "m2", empty) == "pyro"
    assert choose_backend("pyro", "cuda", "lvae", empty) == "pyro"
    # a measurement of benchmarks/throughput.py decides where there is one
    measured = tmp_path / "measured"
    measured.mkdir()
    steps = {"m2": {"step_seconds": {"pyro": 0.09, "numpyro": 0.05}},
             "adgm": {"step_seconds": {"pyro": 0.2, "numpyro": 0.3}}}
    (measured / "cpu.json").write_text(json.dumps({"per_threads": {"1": {"models": steps}}}))
    assert choose_backend("auto", "cpu", "m2", measured) == "numpyro"
    assert choose_backend("auto", "cpu", "adgm", measured) == "pyro"
    assert choose_backend("auto", "cpu", "lvae", measured) == "pyro"  # not measured
    assert CLAIMS["lvae-mnist"].models == ("vae", "lvae") and CLAIMS["lvae-mnist"].order
    for argv, message in ((["reproduce", "m3-mnist", "--minutes", "1"], "unknown claim"),
                          (["reproduce", "m2-mnist100", "--minutes", "0"], "--minutes"),
                          (["reproduce", "m2-mnist100", "--minutes", "1", "--config", "seed=3"],
                           "set by reproduce"),
                          (["reproduce", "lvae-mnist", "--minutes", "1", "--iw-subset", "0"],
                           "--iw-subset"),
                          (["reproduce", "lvae-mnist", "--minutes", "1", "--iw-samples", "-1"],
                           "--iw-samples")):
        assert main([*argv, "--out", str(tmp_path / "bad")]) != 0
        err = capsys.readouterr().err
        assert err.startswith("ppl-dgm: error:") and message in err, err


def test_adgm_report_sets_the_run_beside_the_authors_curve(tmp_path):
    """A run's evaluated records by steps (a history written here by hand) against the authors'
    published log: each milestone passed, the run's 100-sample error at it, the authors' (read
    from the shipped CSV, e.g. 14.6% at 30,000 steps) and the gap; auxiliary.png drawn."""
    import numpy as np

    from ppl_dgm import reference
    from ppl_dgm.reproduction import run_milestones, write_report

    run_dir = tmp_path / "runs" / "adgm-numpyro-seed0"
    run_dir.mkdir(parents=True)
    steps = np.arange(600, 51_001, 600)
    records = []
    for i, step in enumerate(steps):
        record = {"epoch": i + 1, "step": int(step), "loss": 100.0}
        if step % 3000 == 0:  # evaluated every 3000 steps
            record.update(test_error=0.2 - step / 1e6, test_error_a100=0.2 - step / 1e6,
                          test_error_a1=0.21 - step / 1e6, mutual_info_y_a=step / 1e6,
                          a_std=0.5)
        records.append(record)
    results.write_history(run_dir / results.HISTORY, records, {})
    claim = CLAIMS["adgm-mnist100"]
    runs = [{"model": "adgm", "seed": 0, "run_dir": str(run_dir)}]
    marks = run_milestones(claim, runs)
    # 51,000 steps: the milestones at 30k and 48k are passed, 60k not yet
    assert [m["steps"] for m in marks] == [30_000, 48_000]
    assert marks[0]["test_error"] == pytest.approx(0.2 - 0.03)
    assert marks[0]["authors_test_error"] == pytest.approx(0.146)
    assert marks[1]["authors_test_error"] == pytest.approx(0.0792)
    assert marks[0]["gap"] == pytest.approx(0.17 - 0.146)
    assert reference.adgm_mnist100().at(60_000) == pytest.approx(0.0544)
    report = {"runs": [{**runs[0], "backend": "numpyro"}], "models": ["adgm"], "dataset": "mnist",
              "minutes": 1, "device": "cpu", "seeds": [0], "deviations": [], "figure": "test error",
              "results": {"adgm": {"backend": "numpyro", "values": [0.149], "epochs": [85],
                                   "minutes": [1.0], "spread": {"n": 1, "mean": 0.149, "std": None},
                                   "paper": 0.0096, "gap_to_paper": 0.1394,
                                   "auxiliary": [{"mutual_info_y_a": 0.051, "a_std": 0.5,
                                                  "steps": 51000}]}},
              "ordering": None, "commands": [], "milestones": marks, "environment": {}}
    write_report(tmp_path, claim, report)
    assert (tmp_path / "auxiliary.png").is_file() and (tmp_path / "learning_curves.png").is_file()
    md = (tmp_path / "report.md").read_text()
    assert "| adgm | 0 | 30000 | 17.00% | 14.60% | +2.40 points |" in md
    assert "KL(a)" not in md and "I(y; a | x)" in md
    assert json.loads((tmp_path / "report.json").read_text())["milestones"][1]["steps"] == 48_000
