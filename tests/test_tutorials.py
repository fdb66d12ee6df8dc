"""Every tutorial runs end to end in quick mode (``main(quick=True, out=tmp_path)``), and what it
claims to show holds: one ``check_<stem>`` function per tutorial, found by name."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("[0-9][0-9]_*.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"tutorial_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


def figures_written(out: dict, tmp_path: Path) -> None:
    from matplotlib.image import imread

    assert out["figures"], "a tutorial writes at least one figure"
    for figure in out["figures"]:
        figure = Path(figure)
        assert figure.is_file() and tmp_path in figure.parents, figure
        assert imread(figure).ndim == 3


# ------------------------------------------------------------------------------------ 01 M2
def check_01_m2(out: dict) -> None:
    k = out["n_classes"]
    shapes_u, shapes_l = out["shapes_unlabelled"], out["shapes_labelled"]
    # unlabelled: y enumerated left of the data plate, z one per label and point
    assert shapes_u["q:y"] == (k, 1) and shapes_u["q:z"][:2] == (k, 32)
    # labelled: y observed in the plate, no enumeration dimension
    assert shapes_l["p:y"] == (32,) and shapes_l["q:z"][0] == 32
    # the exact sum over labels, written by hand, is what TraceEnum_ELBO computes
    assert math.isclose(out["enum_value"], out["by_hand"], rel_tol=1e-5)
    assert math.isclose(out["classification"], out["classification_by_hand"], rel_tol=1e-5)
    # the lesson: the same gradient, with far less variance when y is summed out
    g = out["gradients"]
    assert g["mean_difference"]["norm"] < 4 * g["mean_difference"]["standard_error"]
    assert out["variance_ratio"] > 10 and g["enumerated"]["snr"] > 3 * g["sampled"]["snr"]
    # it learnt: better than chance after the quick run; the run directory was removed
    assert out["summary"]["test_error"] < 0.5
    assert not (out["folder"] / "run").exists() and out["removed"]


# ------------------------------------------------------------------------------ 02 ADGM/SDGM
def check_02_auxiliary(out: dict) -> None:
    for name, record in out["models"].items():
        k, s = record["n_classes"], record["shapes"]
        # a is drawn once per point, outside the enumeration of y; z once per label and point
        assert s["q:a value"][0] == 16 and len(s["q:a value"]) == 2, name
        assert s["q:y value"] == (k, 1) and s["q:z value"][:2] == (k, 16), name
        # log q(a|x) has no label dimension; the model's log p(a|.) depends on the enumerated y
        assert s["q:a log_prob"] == (16,) and s["p:a log_prob"] == (k, 16), name
        # the a-term (no KL) and I(y; a | x) are recorded every epoch; the information lies in
        # [0, log K] and is positive: the classifier reads a
        assert len(record["a_term"]) == len(record["mutual_info_y_a"]) == record["summary"]["epochs"]
        assert all(abs(v) < 100 for v in record["a_term"]), (name, record["a_term"])
        info = record["mutual_info_y_a"]
        assert all(0 < v <= math.log(k) for v in info), (name, info)
        # the classifier's answer depends on the draw of a
        assert 0 < record["spread"] < 1
        assert record["summary"]["test_error"] < 0.6
    assert len(out["removed"]) == 2 and not any(p.exists() for p in out["removed"])


# ------------------------------------------------------------------------------------ 03 LVAE
def check_03_lvae(out: dict) -> None:
    m = out["merge"]
    # the precision-weighted merge is the normalised product of the two densities (quadrature)
    assert abs(m["merge_loc"] - m["quadrature_loc"]) < 1e-6
    assert abs(m["merge_scale"] - m["quadrature_scale"]) < 1e-6
    # independent closed form: 1 / (1/0.25 + 1) = 0.2; (1.5 * 4 - 1) * 0.2 = 1
    assert abs(m["merge_scale"] ** 2 - 0.2) < 1e-9 and abs(m["merge_loc"] - 1.0) < 1e-9
    assert out["merge_error"] < 1e-6  # the ladder guide samples from exactly that merge
    recipe, plain = out["runs"]["warmup_batchnorm"], out["runs"]["plain"]
    # warm-up and batch norm keep more units active than neither
    assert sum(recipe["active_units"].values()) > sum(plain["active_units"].values())
    assert recipe["active_units"]["z1"] > 0
    iw = out["iw"]
    # IW-K >= its ELBO on average; k-hat per point, in a sensible range
    assert iw["iw"].mean() > iw["elbo"].mean()
    assert len(iw["k_hat"]) == len(iw["iw"]) and np.all(np.isfinite(iw["k_hat"]))
    # a large k-hat goes with a few weights dominating the sum
    hi, lo = iw["k_hat"].argmax(), iw["k_hat"].argmin()
    assert iw["top_share"][hi] > iw["top_share"][lo]


# ---------------------------------------------------------------------------------- 04 CaGeM
def check_04_cagem(out: dict) -> None:
    # TraceEnum_ELBO's sum over the clusters is the loop over y written out by hand
    assert math.isclose(out["enum_value"], out["by_hand"], rel_tol=1e-5)
    ev = out["evaluations"]
    for labels in (100, 0):  # both trained and evaluated on the same test points, y summed in IW
        assert out["summaries"][labels]["n_labelled"] == labels
        assert ev[labels]["test_log_likelihood"] >= ev[labels]["test_elbo"] - 0.05
        assert len(out["per_point"][labels]) == ev[labels]["n_test_evaluated"]
    # with labels: a classifier; without: clusters, all test points assigned, better than chance
    assert ev[100]["test_error"] < 0.5 and "test_error" not in ev[0]
    assert sum(ev[0]["cluster_sizes"]) == out["summaries"][0]["n_test"]
    assert ev[0]["clustering_accuracy"] > 0.2
    # the paired difference and its standard error, from the per-point estimates
    d = out["per_point"][100] - out["per_point"][0]
    assert math.isclose(out["difference"], d.mean(), rel_tol=1e-9) and 0 < out["paired_se"]
    assert sorted(out["order"]) == list(range(len(ev[0]["cluster_sizes"])))
    assert len(out["removed"]) == 2 and not any(p.exists() for p in out["removed"])


# --------------------------------------------------------------------------------- 05 RNN-SPN
def check_05_rnn_spn(out: dict) -> None:
    # the ELBO of the empty-guide program is minus the summed cross-entropy computed by hand
    assert abs(out["loss"] - out["by_hand"]) < 1e-4 * abs(out["by_hand"])
    assert out["observed"] and out["plates"] == ["data", "positions"]
    # identity initialisation: the steps' glimpses coincide and equal a bilinear resize
    assert out["glimpses_equal_at_init"] and out["identity_error"] < 1e-4
    assert out["before"]["moved"] < 1e-6 and out["before"]["centre_spread"] < 1e-6
    # training moved the glimpses apart; the steps asked for were the steps run
    assert out["after"]["moved"] > 1e-3 and out["after"]["centre_spread"] > 0
    assert out["steps"] == out["steps_run"] >= 60
    # the data were written to the output folder (and removed), nowhere else
    assert out["folder"] in out["data"].parents and not out["data"].exists()


# -------------------------------------------------------------------------------- 06 own pair
def check_06_own_pair(out: dict) -> None:
    # the pair lives in the user's folder and the run records where it came from
    assert out["folder"] in out["pair_file"].parents and out["pair_file"].is_file()
    assert str(out["pair_file"]) in json.dumps(out["config"])
    # trained (and resumed to the full number of epochs), evaluated, sampled
    assert out["summary"]["epochs"] == out["epochs"]
    assert out["summary"]["test_error"] < 0.5
    ev = out["evaluation"]
    assert ev["test_log_likelihood"] >= ev["test_elbo"] - 0.05
    # the mixture: class means distinct, and nearer to their own class's codes than chance
    assert out["mixture"]["min_distance"] > 0 and out["mixture"]["nearest_mean_accuracy"] > 0.15


# ------------------------------------------------------------------------------ 07 compare
def check_07_compare(out: dict) -> None:
    toy = out["toy"]
    # Rainforth et al.: with more particles the guide's SNR falls and the model's rises
    assert toy["k"][0] == 1 and toy["k"][-1] >= 100
    assert toy["snr_q"][-1] < 0.5 * toy["snr_q"][0]
    assert toy["snr_p"][-1] > 2 * toy["snr_p"][0]
    # compare wrote its files with the promised dimensions
    assert out["sizes"]["arm"] == 3 and out["sizes"]["seed"] >= 1 and out["sizes"]["epoch"] >= 2
    assert all(Path(f).is_file() for f in out["files"]) and out["finite"]
    # sampling y gives the guide a noisier gradient than summing it out, at the same start
    snr = out["snr_q_init"]
    assert snr["m2/trace/pyro"] < snr["m2/trace_enum/pyro"]
    assert snr["m2/trace_graph/pyro"] < snr["m2/trace_enum/pyro"]
    assert out["removed"] and not any(Path(p).exists() for p in out["removed"])


# --------------------------------------------------------------------------- 08 Pyro/NumPyro
def check_08_pyro_vs_numpyro(out: dict) -> None:
    # the same ELBO for the same weights and noise, to float32 rounding
    assert abs(out["pyro_elbo"] - out["numpyro_elbo"]) < 1e-4 * abs(out["pyro_elbo"])
    # each library's own estimator agrees with the other's within Monte Carlo error
    est = out["estimators"]
    assert abs(np.mean(est["pyro"]) - np.mean(est["numpyro"])) < 4 * out["estimator_se"] + 1e-3
    # both trained to similar losses; both step times measured
    assert abs(out["pyro_loss"] - out["numpyro_loss"]) < 3.0
    assert out["pyro_step"] > 0 and out["numpyro_step"] > 0


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPL_DGM_CACHE", str(tmp_path / "cache"))  # nothing outside tmp_path
    check = globals().get(f"check_{path.stem}")
    assert check is not None, f"add check_{path.stem} to {Path(__file__).name}: what {path.name} shows"
    out = load(path).main(quick=True, out=str(tmp_path))
    figures_written(out, tmp_path)
    check(out)
