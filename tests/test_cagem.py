"""CaGeM (Pyro): the TraceEnum ELBO against the sum over y written out by hand (labelled, unlabelled,
``--labels 0``), the IW estimate with y summed against a hand-written log-mean-exp of that sum, the
gradient reaching q(y | z1, x) through the unlabelled bound, clustering accuracy, and the CLI on
digits with 100 labels and with none.

The guide's noise is fixed by a messenger that draws z1 and z2 as loc + eps * scale for given eps,
so the values stay functions of the guide's networks and the hand computation can use the same eps.
"""

import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import xarray as xr
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from torch import nn
from torch.distributions import Bernoulli, Normal
from torch.nn import functional as F

from ppl_dgm import registry
from ppl_dgm.infer.clustering import clustering_record
from ppl_dgm.infer.importance import log_likelihood
from ppl_dgm.pair import Pair

X_DIM, B, BETA, ALPHA = 7, 5, 0.6, 2.5
Z_DIMS, HIDDEN = [3, 2], [6, 4]


def tiny_pair(n_classes=3, n_labelled=10, n_clusters=None, batch_norm=False, seed=0):
    torch.manual_seed(seed)
    hparams = {"z_dims": Z_DIMS, "hidden_dims": HIDDEN, "batch_norm": batch_norm,
               "n_clusters": n_clusters, "alpha": ALPHA}
    info = SimpleNamespace(x_dim=X_DIM, n_classes=n_classes, n_labelled=n_labelled)
    pair = registry.get("cagem").builder()(hparams, info)
    for p in pair.parameters():  # well away from the initialisation
        p.data.normal_(0, 0.5)
    return pair


def _normal_base(fn):
    while not hasattr(fn, "loc"):
        fn = fn.base_dist
    return fn


class FixNoise(poutine.messenger.Messenger):
    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def _pyro_sample(self, msg):
        if msg["name"] in self.eps and not msg["is_observed"]:
            base = _normal_base(msg["fn"])
            msg["value"] = base.loc + self.eps[msg["name"]] * base.scale


class FixedGuide(nn.Module):
    """The pair's guide with its Gaussian noise fixed to ``eps``."""

    def __init__(self, q, eps):
        super().__init__()
        self.q, self.eps = q, eps

    def forward(self, *args, **kwargs):
        with FixNoise(self.eps):
            return self.q(*args, **kwargs)


def fixed(pair, eps):
    return Pair(pair.p, FixedGuide(pair.q, eps), iw_enumerate=True)


def data(seed=1, n_classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.full((B, X_DIM), 0.5), generator=g)
    y = torch.randint(n_classes, (B,), generator=g)
    eps = {"z1": torch.randn(B, Z_DIMS[0], generator=g), "z2": torch.randn(B, Z_DIMS[1], generator=g)}
    return x, y, eps


# ------------------------------------------------------------------ the bound written out by hand
def hand_terms(pair, x, eps1, eps2, y):
    """Per point, for one value y (a tensor of labels, one per point): the guide's log q(y | z1, x)
    and the terms of the bound: log p(x | z1), and log p(z1|y,z2) + log p(z2) + log p(y) -
    log q(z1|x) - log q(z2|z1,y) (the part warm-up scales)."""
    p, q = pair.p, pair.q
    k = p.n_clusters
    loc1, scale1 = q.q_z1(x)
    z1 = loc1 + eps1 * scale1
    log_qy = torch.log_softmax(q.logits(x, z1), -1).gather(-1, y[..., None])[..., 0]
    y1 = F.one_hot(y, k).float()
    loc2, scale2 = q.q_z2(z1, y1)
    z2 = loc2 + eps2 * scale2
    ploc1, pscale1 = p.p_z1(z2, y1)
    log_px = Bernoulli(logits=p.logits(p.decoder(z1))).log_prob(x).sum(-1)
    latent = (Normal(ploc1, pscale1).log_prob(z1).sum(-1) + Normal(0, 1).log_prob(z2).sum(-1)
              - math.log(k) - Normal(loc1, scale1).log_prob(z1).sum(-1)
              - Normal(loc2, scale2).log_prob(z2).sum(-1))
    return log_qy, log_px, latent


def hand_labelled(pair, x, y, eps, beta, alpha):
    """sum_points [log p(x|z1) + beta * latent + alpha * log q(y | z1, x)]."""
    log_qy, log_px, latent = hand_terms(pair, x, eps["z1"], eps["z2"], y)
    return (log_px + beta * latent + alpha * log_qy).sum()


def hand_unlabelled(pair, x, eps, beta):
    """sum_points sum_y q(y | z1, x) [log p(x|z1) + beta * (latent_y - log q(y | z1, x))]."""
    total = 0.0
    for k in range(pair.p.n_clusters):
        y = torch.full((x.shape[0],), k)
        log_qy, log_px, latent = hand_terms(pair, x, eps["z1"], eps["z2"], y)
        total = total + log_qy.exp() * (log_px + beta * (latent - log_qy))
    return total.sum()


def enum_loss(pair, x, y, eps, beta):
    """TraceEnum_ELBO's loss (summed over points) with the guide's noise fixed to ``eps``."""
    warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    f = fixed(pair, eps)
    return elbo.differentiable_loss(f.model, f.guide, x, y, beta=beta)


@pytest.mark.parametrize("beta", [BETA, 1.0, 0.0])
def test_labelled_and_unlabelled_bounds_equal_the_sums_by_hand(beta):
    pair = tiny_pair()
    x, y, eps = data()
    torch.testing.assert_close(enum_loss(pair, x, y, eps, beta),
                               -hand_labelled(pair, x, y, eps, beta, ALPHA))
    torch.testing.assert_close(enum_loss(pair, x, None, eps, beta),
                               -hand_unlabelled(pair, x, eps, beta))


def test_labels_zero_is_unsupervised_with_n_clusters_and_no_classification_term():
    """--labels 0: K = n_clusters (5 clusters for 3 classes), every point enumerated; the guide is
    never run with y observed, so alpha (set here) has no effect."""
    pair = tiny_pair(n_labelled=0, n_clusters=5)
    assert pair.p.n_clusters == pair.q.n_clusters == 5
    x, _, eps = data(seed=2)
    torch.testing.assert_close(enum_loss(pair, x, None, eps, BETA),
                               -hand_unlabelled(pair, x, eps, BETA))
    with pytest.raises(ValueError, match="at least as many clusters"):
        tiny_pair(n_labelled=0, n_clusters=2)
    with pytest.raises(ValueError, match="one cluster per class"):
        tiny_pair(n_labelled=10, n_clusters=5)


def test_batch_norm_pair_in_evaluation_mode_equals_the_sum_by_hand():
    pair = tiny_pair(batch_norm=True, seed=3)
    for name, buffer in pair.named_buffers():
        if name.endswith("running_mean"):
            buffer.normal_(0, 0.5)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    pair.eval()
    x, y, eps = data(seed=4)
    torch.testing.assert_close(enum_loss(pair, x, None, eps, 1.0),
                               -hand_unlabelled(pair, x, eps, 1.0))


# ------------------------------------------------------------------ the IW estimate, y summed
def test_iw_estimate_sums_y_exactly():
    """log (1/S) sum_s sum_y p(x, y, z1_s, z2_sy) / (q(z1_s | x) q(z2_sy | z1_s, y)), by hand."""
    pair = tiny_pair(seed=5)
    g = torch.Generator().manual_seed(6)
    S = 7
    x = torch.bernoulli(torch.full((B, X_DIM), 0.5), generator=g)
    eps = {"z1": torch.randn(S, B, Z_DIMS[0], generator=g),
           "z2": torch.randn(S, B, Z_DIMS[1], generator=g)}
    estimate = log_likelihood(fixed(pair, eps), x, S, chunk_size=S)
    with torch.no_grad():
        per_y = []
        for k in range(pair.p.n_clusters):
            y = torch.full((S, B), k)
            _, log_px, latent = hand_terms(pair, x, eps["z1"], eps["z2"], y)
            per_y.append(log_px + latent)                       # (S, B)
        log_w = torch.logsumexp(torch.stack(per_y), 0)          # y summed out
        expected = torch.logsumexp(log_w, 0) - math.log(S)
    torch.testing.assert_close(estimate, expected)
    # and it is not the estimator that samples y (whose weights include -log q(y|.) + log p(y))
    sampled = log_likelihood(Pair(pair.p, FixedGuide(pair.q, eps)), x, S, chunk_size=S)
    assert not torch.allclose(sampled, expected)


# ------------------------------------------------------------------ gradients reach q(y | z1, x)
def test_gradient_reaches_the_cluster_logits_through_the_unlabelled_bound():
    """The gradient of the unlabelled bound with respect to q(y | z1, x)'s output layer equals the
    gradient of the sum by hand (and is not zero): it would vanish if y's logits were detached."""
    pair = tiny_pair(seed=7)
    x, _, eps = data(seed=8)
    weight = pair.q.y_logits.weight
    (grad_enum,) = torch.autograd.grad(enum_loss(pair, x, None, eps, BETA), weight)
    (grad_hand,) = torch.autograd.grad(-hand_unlabelled(pair, x, eps, BETA), weight)
    assert grad_enum.abs().sum() > 1e-3
    torch.testing.assert_close(grad_enum, grad_hand)


# ------------------------------------------------------------------ clustering accuracy
def test_clustering_accuracy_under_the_best_assignment():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    clusters = np.array([3, 3, 1, 0, 0, 2, 2, 2, 4])  # 5 clusters, 3 classes
    record = clustering_record(clusters, labels, 5, 3)
    # best: 3 -> 0 (2 points), 0 -> 1 (2), 2 -> 2 (3); clusters 1 and 4 unmatched
    assert record["clustering_accuracy"] == pytest.approx(7 / 9)
    assert record["cluster_sizes"] == [2, 1, 3, 2, 1]
    assert record["cluster_to_class"][3] == 0 and record["cluster_to_class"][0] == 1
    assert record["cluster_to_class"][2] == 2
    permuted = clustering_record((labels + 1) % 3, labels, 3, 3)  # a relabelling is perfect
    assert permuted["clustering_accuracy"] == 1.0


# ------------------------------------------------------------------ the CLI on digits
def _cli(args_list, capsys):
    from ppl_dgm.cli import main

    for args in args_list:
        assert main(args) == 0, capsys.readouterr().err[-3000:]


@pytest.mark.parametrize("labels", [100, 0])
def test_cli_trains_evaluates_and_samples_on_digits(tmp_path, labels, capsys):
    out = tmp_path / "run"
    train = ["train", "cagem", "--dataset", "digits", "--labels", str(labels), "--epochs", "1",
             "--steps-per-epoch", "6", "--device", "cpu", "--out", str(out), "--no-progress",
             "--set", "z_dims=[4,2]", "--set", "hidden_dims=[16,8]", "--warmup-epochs", "0"]
    if labels == 0:
        train += ["--set", "n_clusters=12"]
    _cli([train, ["evaluate", str(out), "--iw-samples", "30", "--subset", "60", "--device", "cpu"],
          ["sample", str(out), "--per-class", "3", "--device", "cpu"]], capsys)
    summary = json.loads((out / "summary.json").read_text())
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert summary["n_labelled"] == labels
    ll, elbo = evaluation["test_log_likelihood"], evaluation["test_elbo"]
    assert math.isfinite(ll) and ll < 0 and ll >= elbo - 0.5, (ll, elbo)
    per_example = xr.open_dataset(out / evaluation["per_example_file"])
    assert per_example["log_likelihood"].shape == (60,)
    assert float(per_example["log_likelihood"].mean()) == pytest.approx(ll, abs=1e-4)
    if labels:
        assert 0 <= evaluation["test_error"] < 1 and "clustering_accuracy" not in evaluation
        history = xr.open_dataset(out / "history.nc")
        assert "loss_labelled" in history
    else:  # unsupervised: no classification, clusters instead
        assert "test_error" not in evaluation and summary["test_error"] is None
        assert len(evaluation["cluster_sizes"]) == 12
        assert sum(evaluation["cluster_sizes"]) == summary["n_test"]
        assert 0 < evaluation["clustering_accuracy"] <= 1
        history = xr.open_dataset(out / "history.nc")
        assert "loss_labelled" not in history
    assert (out / "samples.png").is_file()
