"""Gradient-variance diagnostics: the SNR estimator against hand computations, and enumeration
against sampling at fixed parameters (same expectation, more variance, lower SNR)."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from ppl_dgm import registry
from ppl_dgm.config import resolve
from ppl_dgm.infer.gradient_stats import snr, summarize
from ppl_dgm.infer.gradients import draw_gradients, gradient_draws

X_OBS, MU, SIGMA = 1.5, 0.4, 0.7


def test_snr_and_summary_by_hand():
    draws = np.array([[1.0, 0.0, 3.0], [3.0, 0.0, 3.0], [2.0, 0.0, 3.0], [6.0, 0.0, 3.0]])
    # column 0: mean 3, sample sd sqrt(((−2)² + 0 + 1 + 9) / 3) = sqrt(14 / 3)
    expected = 3 / math.sqrt(14 / 3)
    ratio = snr(draws)
    assert ratio[0] == pytest.approx(expected)
    assert np.isnan(ratio[1]) and np.isnan(ratio[2])  # sd 0: not a ratio
    out = summarize({"q": draws[:, :1], "p": draws[:, :2]}, np.array([1.0, 2.0, 3.0, 6.0]))
    assert out["snr_q_mean"] == pytest.approx(expected)
    assert out["snr_p_median"] == pytest.approx(expected)  # the constant element is left out
    assert out["loss_mean"] == pytest.approx(3.0)
    assert out["loss_var"] == pytest.approx(14 / 3)
    assert out["grad_draws"] == 4 and out["n_q"] == 1 and out["n_p"] == 2
    with pytest.raises(ValueError):
        snr(draws[:1])


def _check_normal_draws(draws: np.ndarray, n: int) -> None:
    """``draws`` (n, 1) of N(2 mu - x, (2 sigma)^2): mean, sd and SNR within 4 standard errors."""
    g = draws[:, 0]
    mean, sd = 2 * MU - X_OBS, 2 * SIGMA
    assert abs(g.mean() - mean) < 4 * sd / math.sqrt(n)
    assert abs(g.std(ddof=1) - sd) < 4 * sd / math.sqrt(2 * n)
    ratio = abs(mean) / sd  # the SNR estimate's standard error is about sqrt((1 + r^2 / 2) / n)
    assert abs(snr(draws)[0] - ratio) < 4 * math.sqrt((1 + ratio**2 / 2) / n)


def test_pyro_gaussian_toy_matches_the_known_gradient_distribution():
    """z ~ N(0, 1), x ~ N(z, 1), q(z) = N(mu, sigma): with z = mu + sigma * eps the one-particle
    Trace_ELBO loss has d/dmu = 2 mu + 2 sigma eps - x ~ N(2 mu - x, (2 sigma)^2), so its SNR is
    |2 mu - x| / (2 sigma) and the loss is -[log p(x, z) - log q(z)] per draw."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    mu = torch.tensor(MU, requires_grad=True)
    log_sigma = torch.tensor(math.log(SIGMA), requires_grad=True)

    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=torch.tensor(X_OBS))

    def guide():
        pyro.sample("z", dist.Normal(mu, log_sigma.exp()))

    elbo = Trace_ELBO()

    def loss_fn():
        loss = elbo.differentiable_loss(model, guide)
        return loss, loss.item()

    n = 1000
    grads, losses = draw_gradients(loss_fn, {"q": [mu]}, n)
    _check_normal_draws(grads["q"], n)
    # E[loss] = -ELBO = KL(q || p(z)) - E log p(x|z), by hand
    kl = math.log(1 / SIGMA) + (SIGMA**2 + MU**2) / 2 - 0.5
    nll = 0.5 * math.log(2 * math.pi) + ((X_OBS - MU) ** 2 + SIGMA**2) / 2
    assert abs(losses.mean() - (kl + nll)) < 4 * losses.std() / math.sqrt(n)


def test_numpyro_gaussian_toy_matches_the_known_gradient_distribution():
    jax = pytest.importorskip("jax")
    import numpyro
    import numpyro.distributions as ndist
    from numpyro.infer import Trace_ELBO as NTrace_ELBO

    from ppl_dgm.infer.numpyro_gradients import draw_gradients as ndraw

    def model():
        z = numpyro.sample("z", ndist.Normal(0.0, 1.0))
        numpyro.sample("x", ndist.Normal(z, 1.0), obs=X_OBS)

    def guide():
        m = numpyro.param("mu", MU)
        numpyro.sample("z", ndist.Normal(m, SIGMA))

    elbo = NTrace_ELBO()
    vg = jax.jit(jax.value_and_grad(
        lambda params, key: elbo.loss(key, params, model, guide), argnums=0))
    params = {"mu": jax.numpy.asarray(MU)}
    n = 1000
    grads, losses = ndraw(lambda k: vg(params, k), {"mu": "q"}, jax.random.PRNGKey(0), n)
    _check_normal_draws(grads["q"], n)


def _trainer(elbo: str, tmp_path):
    from ppl_dgm.training.loop import Trainer

    config = resolve(registry.get("m2"), dict(
        dataset="digits", elbo=elbo, batch_size=20, labelled_batch_size=10, epochs=1,
        steps_per_epoch=1, device="cpu", seed=3), {"hidden": [8], "z_dim": 2, "batch_norm": False})
    return Trainer(config, tmp_path / elbo, progress=False)


def test_enumerated_and_sampled_m2_agree_in_expectation_with_more_noise_sampled(tmp_path):
    """At the same initial parameters and batch, the gradient of TraceEnum_ELBO (y summed out) and
    of Trace_ELBO (y sampled, score function) have the same mean, element by element within their
    standard errors; the sampled one has the larger loss variance and the lower guide SNR."""
    enum, sampled = _trainer("trace_enum", tmp_path), _trainer("trace", tmp_path)
    for a, b in zip(enum.pair.parameters(), sampled.pair.parameters(), strict=True):
        assert torch.equal(a, b)  # the objective check leaves the initialisation unchanged
    n = 200
    g_enum, l_enum = gradient_draws(enum, n)
    g_samp, l_samp = gradient_draws(sampled, n)
    for group in ("q", "p"):
        a, b = g_enum[group], g_samp[group]
        se = np.sqrt(a.var(0, ddof=1) / n + b.var(0, ddof=1) / n)
        moving = se > 0
        z = np.abs(a.mean(0) - b.mean(0))[moving] / se[moving]
        assert np.mean(z > 4) < 0.01, (group, np.sort(z)[-5:])
        assert moving.sum() > 0.5 * a.shape[1]
    se = math.sqrt(l_enum.var(ddof=1) / n + l_samp.var(ddof=1) / n)
    assert abs(l_enum.mean() - l_samp.mean()) < 4 * se
    assert l_samp.var() > 1.2 * l_enum.var()  # an F ratio far beyond chance at 200 draws
    snr_enum, snr_samp = summarize(g_enum, l_enum), summarize(g_samp, l_samp)
    assert snr_samp["snr_q_median"] < snr_enum["snr_q_median"]
    assert snr_samp["snr_p_median"] < snr_enum["snr_p_median"]


def test_gradient_draws_leave_the_trainer_unchanged(tmp_path):
    trainer = _trainer("trace_graph", tmp_path)
    before = {k: v.clone() for k, v in trainer.pair.state_dict().items()}
    rng = torch.get_rng_state()
    x = trainer.x_train
    gradient_draws(trainer, 3)
    assert trainer.x_train is x and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in trainer.pair.state_dict().items())
    assert all(p.grad is None for p in trainer.pair.parameters())
    assert not any(n.startswith("__baseline") for n in pyro.get_param_store().keys())
