"""NumPyro evaluation: the importance weights against log p - log q written out by hand for the
same guide samples, the IW estimate at K = 1 against the ELBO, its growth with K and its convergence
to log p(x) computed by quadrature, and class-conditional sampling.

(``evaluate`` and ``sample`` on a NumPyro run directory are tested in ``test_numpyro_m2.py``, on
its short run on digits.)
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from test_numpyro_m2 import B, D, K, Z, binary, init_params, log_normal, log_q_y, tiny_pair

from ppl_dgm.infer.numpyro_importance import log_likelihood, log_weights
from ppl_dgm.infer.numpyro_objectives import elbo_per_example
from ppl_dgm.infer.psis import pareto_k
from ppl_dgm.nn.flax_blocks import apply

N_PARTICLES = 20000


def broad_guide(params):
    """q(z | x, y) wider than p(z) (scale about e^0.4 = 1.5): with q(y|x) > 0 and p(x|y,z) <= 1 the
    importance weights p(x, y, z) / q(y, z | x) are bounded, so the IW estimate converges at the
    Monte Carlo rate and a tolerance of a few standard errors is meaningful."""
    head = params["encoder$params"]["z_head"]
    z_head = {"loc": jax.tree.map(lambda v: 0.3 * v, head["loc"]),
              "logvar": {"kernel": 0.1 * head["logvar"]["kernel"],
                         "bias": jnp.full_like(head["logvar"]["bias"], 0.8)}}
    encoder = {**params["encoder$params"], "z_head": z_head}
    return {**params, "encoder$params": encoder}


@pytest.fixture(scope="module")
def tiny():
    pair = tiny_pair()
    return pair, broad_guide(init_params(pair)), binary(1, (B, D))


@pytest.fixture(scope="module")
def weights(tiny):
    """N_PARTICLES log-weights per point, shape (N_PARTICLES, B), float64."""
    pair, params, x = tiny
    _, log_w = log_likelihood(pair, params, x, jax.random.PRNGKey(0), N_PARTICLES,
                              chunk_size=5000, return_log_weights=True)
    return np.asarray(log_w, np.float64)


def exact_log_px(pair, params, x, n=30):
    """log p(x) = log sum_y p(y) int N(z; 0, I) p(x | y, z) dz by Gauss-Hermite quadrature (z in 2-d)."""
    t, w = np.polynomial.hermite.hermgauss(n)
    z = math.sqrt(2) * np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, Z)
    log_quad_w = np.log(np.outer(w, w).reshape(-1) / math.pi)
    xs = np.asarray(x, np.float64)[:, None, :]
    per_class = []
    for y in range(K):
        onehot = jnp.broadcast_to(jax.nn.one_hot(y, K), (len(z), K))
        logits = np.asarray(apply(pair.model.decoder, params, "decoder", jnp.asarray(z, jnp.float32),
                                  onehot, train=False), np.float64)[None]
        log_px_given = (xs * logits - np.logaddexp(0.0, logits)).sum(-1)  # (B, n * n)
        per_class.append(np.logaddexp.reduce(log_px_given + log_quad_w, axis=1) - math.log(K))
    return np.logaddexp.reduce(np.stack(per_class), axis=0)


def test_log_weights_are_log_p_minus_log_q_of_the_guide_samples(tiny):
    """Each particle's weight, for the y and z its guide run drew (y sampled, not enumerated):
    log p(x|y,z) + log p(y) + log p(z) - log q(y|x) - log q(z|x,y), written out in numpy."""
    pair, params, x = tiny
    keys = jax.random.split(jax.random.PRNGKey(3), 16)  # the next test's chunk: one compilation
    log_w = np.asarray(log_weights(pair, params, x, keys), np.float64)
    assert log_w.shape == (16, B)
    lq_y = np.asarray(log_q_y(pair, params, x), np.float64)

    def draw(key):
        guide = handlers.substitute(handlers.seed(pair.guide, key), data=params)
        trace = handlers.trace(guide).get_trace(x, None, train=False)
        return trace["y"]["value"], trace["z"]["value"]

    y, z = jax.jit(jax.vmap(draw))(keys)  # (16, B), (16, B, Z): the particles' draws
    onehot = jax.nn.one_hot(y, K)
    loc, scale = apply(pair.guide.encoder, params, "encoder", x, onehot, train=False)
    logits = np.asarray(apply(pair.model.decoder, params, "decoder", z, onehot, train=False),
                        np.float64)
    xs = np.asarray(x, np.float64)
    hand = ((xs * logits - np.logaddexp(0.0, logits)).sum(-1) - math.log(K)
            + np.asarray(log_normal(z, 0.0, 1.0)) - lq_y[np.arange(B), np.asarray(y)]
            - np.asarray(log_normal(z, loc, scale)))
    np.testing.assert_allclose(log_w, hand, rtol=1e-5, atol=1e-4)
    # y is drawn per particle (not enumerated, not fixed per point)
    assert any(len(np.unique(np.asarray(y)[:, b])) > 1 for b in range(B))


def test_log_likelihood_is_the_logsumexp_of_its_chunked_weights(tiny):
    pair, params, x = tiny
    key = jax.random.PRNGKey(4)
    ll, log_w = log_likelihood(pair, params, x, key, 50, chunk_size=16, return_log_weights=True)
    assert log_w.shape == (50, B) and ll.shape == (B,)
    # chunk i holds the particles of jax.random.split(fold_in(key, i), 16); the last one is cut
    chunk = lambda i: np.asarray(log_weights(pair, params, x, jax.random.split(  # noqa: E731
        jax.random.fold_in(key, i), 16)))
    np.testing.assert_allclose(log_w[:16], chunk(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_w[48:], chunk(3)[:2], rtol=1e-6, atol=1e-6)
    w = np.asarray(log_w, np.float64)
    top = w.max(0)
    by_hand = top + np.log(np.exp(w - top).sum(0)) - math.log(50)
    np.testing.assert_allclose(ll, by_hand, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_likelihood(pair, params, x, key, 50, chunk_size=16), ll)


def _iw_means(log_w, k):
    """Mean over points of IW-k estimates from disjoint groups of k particles, one per group."""
    groups = log_w[:len(log_w) // k * k].reshape(-1, k, log_w.shape[1])
    estimates = np.logaddexp.reduce(groups, axis=1) - math.log(k)  # (groups, B)
    return estimates.mean(1)


def test_iw_at_k1_averages_to_the_elbo_and_grows_with_k(tiny, weights):
    pair, params, x = tiny
    keys = jax.random.split(jax.random.PRNGKey(5), 4000)
    elbos = np.asarray(jax.jit(jax.vmap(lambda k: elbo_per_example(pair, params, x, k)))(keys))
    k1 = _iw_means(weights, 1)
    se = math.sqrt(k1.var() / len(k1) + elbos.var() / len(elbos))
    assert abs(k1.mean() - elbos.mean()) < 4 * se + 1e-3, (k1.mean(), elbos.mean(), se)
    exact = exact_log_px(pair, params, x).mean()
    means = {k: _iw_means(weights, k).mean() for k in (1, 10, 100)}
    assert means[1] < means[10] < means[100] < exact + 0.02
    assert means[10] > elbos.mean() + 10 * se


def test_iw_converges_to_log_px_by_quadrature(tiny, weights):
    pair, params, x = tiny
    exact = exact_log_px(pair, params, x)
    estimate = np.logaddexp.reduce(weights, axis=0) - math.log(len(weights))
    # delta method: sd(log mean w) = sd(w) / (mean(w) sqrt(N)), with w scaled by its maximum
    w = np.exp(weights - weights.max(0))
    se = w.std(0) / (w.mean(0) * math.sqrt(len(w)))
    assert np.all(np.abs(estimate - exact) < 4 * se + 1e-3), (estimate, exact, se)
    # the test can tell the estimator from the ELBO: the gap is many standard errors
    assert np.all(exact - weights.mean(0) > 20 * se)
    assert np.all(pareto_k(weights) < 0.7)


def test_sample_x_is_class_conditional_bernoulli_means(tiny):
    pair, params, _ = tiny
    key = jax.random.PRNGKey(6)
    images = np.asarray(pair.sample_x(params, key, 6, jnp.array([0, 1, 2, 0, 1, 2])))
    assert images.shape == (6, D) and np.all((images > 0) & (images < 1))
    other = np.asarray(pair.sample_x(params, key, 6, jnp.array([1, 2, 0, 1, 2, 0])))
    assert not np.allclose(images, other)  # same z, other labels: the decoder reads y
