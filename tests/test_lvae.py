"""LVAE: hierarchical model, plain and ladder guides, warm-up, batch norm, per-site diagnostics."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from ppl_dgm.guides.ladder import precision_weighted_merge
from ppl_dgm.infer.diagnostics import active_units, site_kl, unit_variances
from ppl_dgm.models.lvae import build

X_DIM = 12


def tiny(guide: str, z_dims=(3, 2), hidden_dims=(8, 6), **kw):
    hp = {"guide": guide, "z_dims": list(z_dims), "hidden_dims": list(hidden_dims), **kw}
    return build(hp, SimpleNamespace(x_dim=X_DIM))


def data(n: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand(n, X_DIM, generator=g), generator=g)


def guide_params(pair, x):
    """{site: (loc, scale)} of the guide's distributions, in the pair's current mode."""
    with torch.no_grad():
        tr = poutine.trace(pair.guide).get_trace(x)
    return {n: (s["fn"].base_dist.loc, s["fn"].base_dist.scale)
            for n, s in tr.nodes.items() if s["type"] == "sample" and n.startswith("z")}


# ------------------------------------------------------------------------ precision-weighted merge

def test_merge_equals_normalised_product_of_densities():
    """Mean and variance of N(a) * N(b), normalised numerically on a grid."""
    loc_a, scale_a = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.5, 2.0, 0.1])
    loc_b, scale_b = torch.tensor([-0.4, 1.5, 2.3]), torch.tensor([1.2, 0.7, 0.3])
    loc, scale = precision_weighted_merge(loc_a, scale_a, loc_b, scale_b)
    grid = np.linspace(-12, 12, 400_001)
    for k in range(3):
        def logpdf(m, s):
            return -0.5 * ((grid - m) / s) ** 2 - np.log(s)
        lp = logpdf(loc_a[k].item(), scale_a[k].item()) + logpdf(loc_b[k].item(), scale_b[k].item())
        w = np.exp(lp - lp.max())
        w /= w.sum()
        mean = (w * grid).sum()
        var = (w * (grid - mean) ** 2).sum()
        assert loc[k].item() == pytest.approx(mean, abs=1e-5)
        assert scale[k].item() ** 2 == pytest.approx(var, rel=1e-4)


def test_merge_broadcasts_and_limits():
    loc, scale = precision_weighted_merge(torch.zeros(4, 1, 3), torch.ones(3),
                                          torch.ones(2, 3), torch.full((3,), 1e3))
    assert loc.shape == scale.shape == (4, 2, 3)
    # A very wide top-down distribution leaves the bottom-up estimate almost unchanged.
    assert torch.allclose(scale, torch.ones(()), atol=1e-5)
    assert torch.allclose(loc, torch.zeros(()), atol=1e-5)


# ------------------------------------------------------------------------ one layer: ladder == VAE

@pytest.mark.parametrize("train_mode", [True, False])
def test_one_layer_ladder_guide_is_the_vae_guide(train_mode):
    plain = tiny("hierarchical", z_dims=[3], hidden_dims=[8])
    ladder = tiny("ladder", z_dims=[3], hidden_dims=[8])
    # Same parameters: the whole pair's state dict carries over key for key.
    torch.manual_seed(1)
    for p in plain.parameters():
        p.data.normal_(0, 0.5)
    ladder.load_state_dict(plain.state_dict())
    plain.train(train_mode)
    ladder.train(train_mode)
    x = data(10)
    a, b = guide_params(plain, x), guide_params(ladder, x)
    assert list(a) == list(b) == ["z1"]
    assert torch.equal(a["z1"][0], b["z1"][0]) and torch.equal(a["z1"][1], b["z1"][1])
    losses = []
    for pair in (plain, ladder):
        pyro.set_rng_seed(3)
        losses.append(Trace_ELBO().differentiable_loss(pair.model, pair.guide, x, None, beta=0.4))
    assert losses[0].item() == losses[1].item()


# ------------------------------------------------------------------------ batch norm

@pytest.mark.parametrize("guide", ["hierarchical", "ladder"])
def test_eval_mode_batch_norm_does_not_depend_on_the_batch(guide):
    pair = tiny(guide, z_dims=[4, 3, 2], hidden_dims=[8, 6, 5])
    x = data(32)
    pair.train()
    with torch.no_grad():  # move the running statistics away from their initial values
        for _ in range(3):
            pyro.set_rng_seed(0)
            Trace_ELBO().loss(pair.model, pair.guide, x[:16], None)
    # The point x[0] in two different batches of the same size; the same seed gives its sampled
    # parents the same noise, so its guide distributions must agree exactly in eval mode.
    batch_a, batch_b = x[:8], torch.cat([x[:1], x[20:27]])
    pair.eval()
    pyro.set_rng_seed(5)
    pa = guide_params(pair, batch_a)
    pyro.set_rng_seed(5)
    pb = guide_params(pair, batch_b)
    for site in pa:
        for u, v in zip(pa[site], pb[site], strict=True):
            torch.testing.assert_close(u[0], v[0])
    # Sanity: in training mode the same point's output does depend on its batch.
    pair.train()
    pyro.set_rng_seed(5)
    ta = guide_params(pair, batch_a)
    pyro.set_rng_seed(5)
    tb = guide_params(pair, batch_b)
    first = "z1" if guide == "hierarchical" else "z3"
    assert not torch.allclose(ta[first][0][0], tb[first][0][0])


# ------------------------------------------------------------------------ warm-up and gradients

@pytest.mark.parametrize("guide,share", [("hierarchical", True), ("ladder", True),
                                         ("ladder", False)])
@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0])
def test_differentiable_loss_with_warmup_has_finite_gradients(guide, share, beta):
    pair = tiny(guide, share_top_down=share)
    x = data(8)
    pyro.set_rng_seed(0)
    loss = Trace_ELBO().differentiable_loss(pair.model, pair.guide, x, None, beta=beta)
    loss.backward()
    assert torch.isfinite(loss)
    prior_only = {f"p.top_down.{n}" for n, _ in pair.p.top_down.named_parameters()}
    if guide == "ladder" and share:
        prior_only = set()  # the guide's top-down pass uses them too
    if guide == "hierarchical":  # at beta = 0 only z1 reaches x: q(z2 | z1) gets no gradient
        prior_only |= {f"q.up.1.{n}" for n, _ in pair.q.up[1].named_parameters()}
    for name, p in pair.named_parameters():
        if beta == 0 and name in prior_only:  # log p(z_i | z_i+1) has weight 0: no gradient
            assert p.grad is None or not p.grad.any(), name
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # guide parameters get gradients even at beta = 0 (through the reparameterised samples)
    assert any(p.grad.abs().sum() > 0 for p in pair.q.parameters())


@pytest.mark.parametrize("guide", ["hierarchical", "ladder"])
def test_warmup_scales_exactly_the_latent_sites(guide):
    """-ELBO_beta = -log p(x|z) + beta * sum_sites (log q - log p), from traces computed by hand."""
    pair = tiny(guide, z_dims=[3, 2, 2], hidden_dims=[8, 6, 4]).eval()
    x = data(6)
    pyro.set_rng_seed(11)
    tr_q = poutine.trace(pair.guide).get_trace(x)
    tr_p = poutine.trace(poutine.replay(pair.model, trace=tr_q)).get_trace(x)
    rec = tr_p.nodes["x"]["fn"].log_prob(x).sum()
    kl = sum(tr_q.nodes[f"z{i}"]["fn"].log_prob(tr_q.nodes[f"z{i}"]["value"]).sum()
             - tr_p.nodes[f"z{i}"]["fn"].log_prob(tr_q.nodes[f"z{i}"]["value"]).sum()
             for i in (1, 2, 3))
    for beta in (0.0, 0.3, 1.0):
        pyro.set_rng_seed(11)
        loss = Trace_ELBO().differentiable_loss(pair.model, pair.guide, x, None, beta=beta)
        torch.testing.assert_close(loss, -rec + beta * kl, rtol=1e-5, atol=1e-4)


def test_shared_top_down_is_the_models_network():
    shared = tiny("ladder", share_top_down=True)
    own = tiny("ladder", share_top_down=False)
    assert shared.q.top_down is shared.p.top_down
    assert own.q.top_down is not own.p.top_down
    n_shared = sum(p.numel() for p in shared.parameters())
    n_own = sum(p.numel() for p in own.parameters())
    assert n_own - n_shared == sum(p.numel() for p in own.q.top_down.parameters()) > 0


# ------------------------------------------------------------------------ any number of layers

@pytest.mark.parametrize("guide", ["hierarchical", "ladder"])
@pytest.mark.parametrize("z_dims,hidden_dims", [
    ([5], [7]), ([4, 6], [9, 3]), ([2, 3, 1], [5, 5, 5]), ([6, 5, 4, 3], [8, 7, 6, 5]),
    ([3, 1, 4, 1, 5], [9, 2, 6, 5, 3]),
])
def test_any_number_of_layers_and_sizes(guide, z_dims, hidden_dims):
    pair = tiny(guide, z_dims=z_dims, hidden_dims=hidden_dims, batch_norm=len(z_dims) % 2 == 1)
    x = data(5)
    tr_q = poutine.trace(pair.guide).get_trace(x)
    tr_p = poutine.trace(poutine.replay(pair.model, trace=tr_q)).get_trace(x)
    L = len(z_dims)
    latent = [n for n, s in tr_p.nodes.items() if n.startswith("z")]
    assert latent == [f"z{i}" for i in range(L, 0, -1)]  # the model samples top-down
    for i, d in enumerate(z_dims, start=1):
        assert tr_q.nodes[f"z{i}"]["value"].shape == (5, d)
    assert tr_p.nodes["x"]["is_observed"]
    loss = Trace_ELBO().differentiable_loss(pair.model, pair.guide, x, None, beta=0.5)
    assert torch.isfinite(loss)
    pair.eval()
    samples = pair.sample_x(4)
    assert samples.shape == (4, X_DIM) and ((samples >= 0) & (samples <= 1)).all()


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError):
        tiny("ladder", z_dims=[3, 2], hidden_dims=[8])
    with pytest.raises(ValueError):
        tiny("nonsense")
    with pytest.raises(ValueError):
        build({"z_dim": 3}, SimpleNamespace(x_dim=X_DIM))


def test_variance_floor():
    pair = tiny("ladder", z_dims=[3, 2], hidden_dims=[8, 6], batch_norm=False, min_scale=0.1)
    for p in pair.parameters():
        p.data.zero_()
    for head in (pair.q.up[0].head, pair.q.up[1].head, pair.p.top_down[0].head):
        head.logvar.bias.data.fill_(-50.0)  # exp(-25) ~ 0: the floor is what is left
    params = guide_params(pair, data(4))
    assert torch.allclose(params["z2"][1], torch.tensor(0.1))
    # z1 merges two floored Gaussians: var = 1 / (2 / 0.01)
    assert torch.allclose(params["z1"][1], torch.tensor(0.1 / math.sqrt(2)))


# ------------------------------------------------------------------------ diagnostics

def test_site_kl_matches_closed_form_for_one_layer():
    pair = tiny("hierarchical", z_dims=[3], hidden_dims=[8])
    x = data(6)
    pair.eval()
    with torch.no_grad():
        loc, scale = pair.q.up[0](x)
        exact = torch.distributions.kl_divergence(dist.Normal(loc, scale),
                                   dist.Normal(0.0, 1.0)).sum(-1).mean().item()
    pyro.set_rng_seed(0)
    estimate = site_kl(pair, x, num_samples=4000)
    assert set(estimate) == {"z1"}
    assert estimate["z1"] == pytest.approx(exact, abs=0.05 * max(1.0, exact))
    assert pair.p.training is False  # the pair's mode is restored (eval before the call)


@pytest.mark.parametrize("guide", ["hierarchical", "ladder"])
def test_site_kl_sums_to_the_elbo_kl_and_keeps_the_mode(guide):
    pair = tiny(guide, z_dims=[3, 2, 2], hidden_dims=[8, 6, 4])
    x = data(12)
    pair.train()
    pyro.set_rng_seed(2)
    kl = site_kl(pair, x, num_samples=1, batch_size=5)  # chunked: 5 + 5 + 2
    assert pair.training
    assert set(kl) == {"z1", "z2", "z3"}
    pair.eval()
    pyro.set_rng_seed(2)
    tr_q = poutine.trace(pair.guide).get_trace(x[:5])
    tr_p = poutine.trace(poutine.replay(pair.model, trace=tr_q)).get_trace(x[:5])
    assert all(np.isfinite(v) for v in kl.values())
    # the first chunk, recomputed by hand with the same noise
    first = {n: (tr_q.nodes[n]["fn"].log_prob(tr_q.nodes[n]["value"])
                 - tr_p.nodes[n]["fn"].log_prob(tr_q.nodes[n]["value"])).mean().item()
             for n in kl}
    pyro.set_rng_seed(2)
    kl_first = site_kl(pair, x[:5], num_samples=1)
    for n in kl:
        assert kl_first[n] == pytest.approx(first[n], rel=1e-5, abs=1e-5)


def test_active_units_counts_units_whose_mean_varies_with_x():
    pair = tiny("hierarchical", z_dims=[5, 3], hidden_dims=[8, 6], batch_norm=False)
    head0, head1 = pair.q.up[0].head, pair.q.up[1].head
    with torch.no_grad():
        head0.loc.weight[[1, 3]] = 0.0  # z1 units 1 and 3 ignore x: inactive
        head0.loc.weight[[0, 2, 4]] *= 50.0
        head1.loc.weight.zero_()  # z2 has no active unit at all
        head1.loc.bias.fill_(0.7)
    x = data(200)
    counts = active_units(pair, x, num_samples=3)
    assert counts == {"z1": 3, "z2": 0}
    variances = unit_variances(pair, x, num_samples=3)
    assert variances["z1"].shape == (5,)
    assert np.allclose(variances["z1"][[1, 3]], 0.0, atol=1e-10)
    # ladder: the top layer's mean is the bottom-up estimate; z1's mean comes through the merge
    ladder = tiny("ladder", z_dims=[4, 2], hidden_dims=[8, 6], batch_norm=False)
    counts = active_units(ladder, x, num_samples=2)
    assert set(counts) == {"z1", "z2"} and all(0 <= c <= d for c, d in zip(
        (counts["z1"], counts["z2"]), (4, 2), strict=True))


# ------------------------------------------------------------------------ plots

def test_plots_are_written_atomically(tmp_path):
    import xarray as xr
    from matplotlib.image import imread

    from ppl_dgm.plots import image_grid, plot_site_kl, tile_images

    history = xr.Dataset({"kl": (("epoch", "site"), np.random.rand(4, 3))},
                         coords={"epoch": [1, 2, 3, 4], "site": ["z1", "z2", "z3"]})
    plot_site_kl(history, tmp_path / "kl.png")
    image_grid(np.random.rand(7, 8, 8), tmp_path / "sub" / "samples.png", nrow=3)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["kl.png", "samples.png"]
    assert imread(tmp_path / "kl.png").ndim == 3
    grid = tile_images(np.arange(5 * 2 * 3).reshape(5, 2, 3) / 30.0, nrow=2, pad=1)
    assert grid.shape == (3 * 3 + 1, 2 * 4 + 1)
    np.testing.assert_allclose(grid[1:3, 5:8], np.arange(6, 12).reshape(2, 3) / 30.0)
    # 8x8 images enlarged x3, separated and framed by 2 pixels of grey
    assert imread(tmp_path / "sub" / "samples.png").shape[:2] == (3 * 26 + 2, 3 * 26 + 2)


# ------------------------------------------------------------------------ free bits

def test_free_bits_zero_is_the_elbo_and_clamps_gradients():
    from ppl_dgm.infer.free_bits import free_bits_loss

    pair = tiny("ladder", z_dims=[3, 2], hidden_dims=[8, 6]).eval()
    x = data(8)
    pyro.set_rng_seed(4)
    loss, logs = free_bits_loss(pair, x, free_bits=0.0, beta=0.5)
    pyro.set_rng_seed(4)
    ref = Trace_ELBO().differentiable_loss(pair.model, pair.guide, x, None, beta=0.5) / len(x)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    assert {"kl_z1", "kl_z2", "log_lik"} <= set(logs)
    # a huge free-bits threshold removes every KL gradient: only the reconstruction is left
    pyro.set_rng_seed(4)
    loss, logs = free_bits_loss(pair, x, free_bits=1e6)
    loss.backward()
    assert loss.item() == pytest.approx(-float(logs["log_lik"]) + 2e6)
    grads = {n: p.grad.clone() for n, p in pair.named_parameters() if p.grad is not None}
    pair.zero_grad()
    pyro.set_rng_seed(4)
    guide_trace = poutine.trace(pair.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(pair.model, trace=guide_trace)).get_trace(x)
    (-model_trace.nodes["x"]["fn"].log_prob(x).sum() / len(x)).backward()
    for n, p in pair.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ importance sampling

@pytest.mark.parametrize("guide", ["hierarchical", "ladder"])
def test_iw_estimate_is_monotone_in_k_and_above_the_elbo(guide):
    """E[IW_K] = ELBO at K = 1 and increases with K (Burda et al. 2015, theorem 1)."""
    from ppl_dgm.infer.importance import log_likelihood

    pair = tiny(guide, z_dims=[3, 2], hidden_dims=[8, 6]).eval()
    with torch.no_grad():
        pair.p.logits.weight.mul_(4.0)  # a sharper likelihood: a wider gap between the bounds
    x = data(8)
    pyro.set_rng_seed(0)
    estimates = {}
    for k, repeats in ((1, 1000), (10, 200), (200, 40)):
        # eval mode: repeating the points in one batch gives independent estimates at once
        ll = log_likelihood(pair, x.repeat(repeats, 1), k)
        estimates[k] = ll.mean().item()
    pyro.set_rng_seed(1)
    elbo = -Trace_ELBO(num_particles=2000, vectorize_particles=True,
                       max_plate_nesting=1).loss(pair.model, pair.guide, x, None) / len(x)
    assert estimates[1] == pytest.approx(elbo, abs=0.1)
    assert estimates[1] < estimates[10] < estimates[200]
    assert estimates[200] > elbo + 0.1
