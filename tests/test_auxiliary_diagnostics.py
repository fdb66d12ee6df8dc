"""The diagnostics of ADGM/SDGM's auxiliary variable, --eval-every, presets and a frozen q(a|x).

I(y; a | x) is checked against hand computations: a two-sample case written out, and a pair whose
classifier is known in closed form, q(a|x) = N(0, 1), q(y|a,x) = softmax(w a, 0), whose mutual
information is a one-dimensional integral computed here by Gauss-Hermite quadrature (and is 0 for
w = 0, a classifier that ignores a).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ppl_dgm import presets, registry, results
from ppl_dgm.config import TrainConfig, defaults, resolve
from ppl_dgm.errors import UserError
from ppl_dgm.infer.auxiliary_diagnostics import AuxiliaryTally, mutual_information


def binary_entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p)) if 0 < p < 1 else 0.0


def test_mutual_information_two_draws_by_hand():
    # two draws of a, one point, two classes: q(y|a_1) = (0.9, 0.1), q(y|a_2) = (0.1, 0.9)
    probs = np.array([[[0.9, 0.1]], [[0.1, 0.9]]])
    expected = math.log(2) - binary_entropy(0.9)
    assert mutual_information(probs)[0] == pytest.approx(expected, rel=1e-12)
    # identical draws: a carries nothing about y
    same = np.array([[[0.3, 0.7]], [[0.3, 0.7]]])
    assert mutual_information(same)[0] == pytest.approx(0.0, abs=1e-15)


def test_tally_errors_and_scale_by_hand():
    # 3 draws, 2 points, 3 classes; the one-draw prediction is the first draw's argmax
    probs = np.array([[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]],
                      [[0.1, 0.2, 0.7], [0.1, 0.8, 0.1]],
                      [[0.1, 0.2, 0.7], [0.1, 0.8, 0.1]]])
    tally = AuxiliaryTally()
    tally.add(probs, labels=np.array([2, 1]), scale=np.array([[1.0, 3.0], [0.5, 0.5]]))
    figures = tally.figures()
    # point 0: one draw says 0 (wrong), the mean (0.27, 0.23, 0.5) says 2 (right); point 1 right both
    assert figures["test_error_a1"] == 0.5 and figures["test_error_a3"] == 0.0
    assert figures["a_std"] == pytest.approx((2.0 + 0.5) / 2)
    expected = np.mean([mutual_information(probs[:, i:i + 1])[0] for i in range(2)])
    assert figures["mutual_info_y_a"] == pytest.approx(expected)


def quadrature_mutual_information(w: float, order: int = 80) -> float:
    """I(y; a) for a ~ N(0, 1), q(y=0|a) = sigmoid(w a): H[E sigmoid(w a)] - E H[sigmoid(w a)]."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    weights = weights / weights.sum()
    p = 1 / (1 + np.exp(-w * nodes))
    mean_entropy = float(np.sum(weights * np.array([binary_entropy(v) for v in p])))
    return binary_entropy(float(np.sum(weights * p))) - mean_entropy


def known_pyro_guide(w: float):
    """The registered Pyro auxiliary guide with q(a|x) = N(0, 1) and q(y|a,x) = softmax(w a, 0)."""
    pair = registry.get("adgm").builder()(
        {"a_dim": 1, "z_dim": 2, "hidden": [3], "activation": "relu", "batch_norm": False,
         "alpha": 1.0}, SimpleNamespace(x_dim=4, n_classes=2))
    guide = pair.q
    guide.q_a = lambda x: (torch.zeros(len(x), 1), torch.ones(len(x), 1))
    guide.q_y_logits = lambda x, a: torch.cat([w * a, torch.zeros_like(a)], dim=-1)
    return guide


@pytest.mark.parametrize("w", [0.0, 3.0])
def test_guide_mutual_information_matches_quadrature(w):
    torch.manual_seed(0)
    guide = known_pyro_guide(w)
    x = torch.zeros(4000, 4)
    probs, scale = guide.sample_class_probs(x, 100)
    assert probs.shape == (100, 4000, 2) and torch.all(scale == 1)
    tally = AuxiliaryTally()
    tally.add(probs.numpy(), None, scale.numpy())
    figures = tally.figures()
    if w == 0:
        assert figures["mutual_info_y_a"] == pytest.approx(0.0, abs=1e-12)
    else:
        # 100 draws per point: the plug-in H[mean] is biased low by about (K-1)/(2S) E[q(1-q)]...;
        # the quadrature value (0.35 nats for w = 3) is matched within 0.01 nats
        expected = quadrature_mutual_information(w)
        assert expected > 0.3
        assert figures["mutual_info_y_a"] == pytest.approx(expected, abs=0.01)
    assert figures["a_std"] == 1.0


def test_numpyro_guide_sample_class_probs_matches_its_networks():
    jax = pytest.importorskip("jax")
    from numpyro import handlers

    from ppl_dgm.nn.flax_blocks import apply

    pair = registry.get("adgm", "numpyro").builder()(
        {"a_dim": 2, "z_dim": 2, "hidden": [5], "activation": "tanh", "batch_norm": False,
         "alpha": 1.0, "num_particles": 1}, SimpleNamespace(x_dim=4, n_classes=3))
    x = jax.numpy.asarray(np.random.default_rng(0).random((6, 4)) > 0.5, jax.numpy.float32)
    trace = handlers.trace(handlers.seed(pair.guide, 0)).get_trace(x, train=False)
    params = {name: site["value"] for name, site in trace.items() if site["type"] == "param"}
    key = jax.random.PRNGKey(1)
    probs, scale = pair.guide.sample_class_probs(params, x, num_samples=7, rng_key=key)
    loc, want_scale = apply(pair.guide.q_a, params, "q_a", x, train=False)
    np.testing.assert_allclose(np.asarray(scale), np.asarray(want_scale))
    a = loc + want_scale * jax.random.normal(key, (7, *loc.shape))
    want = jax.nn.softmax(apply(pair.guide.q_y, params, "q_y", x, a, train=False), axis=-1)
    np.testing.assert_allclose(np.asarray(probs), np.asarray(want), rtol=1e-6)
    # the mean over the draws is what the classifier averages
    mean = pair.guide.classify(params, x, num_samples=7, rng_key=key)
    np.testing.assert_allclose(np.asarray(probs.mean(0)), np.asarray(mean), rtol=1e-5)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_eval_every_records_steps_and_diagnostics(backend, tmp_path):
    if backend == "numpyro":
        pytest.importorskip("jax")
    from ppl_dgm.backends import trainer_class

    spec = registry.get("adgm", backend)
    config = resolve(spec, {"dataset": "digits", "epochs": 3, "steps_per_epoch": 2, "eval_every": 4,
                            "validation_size": 0, "classify_samples": 100},
                     {"hidden": [16], "a_dim": 4, "z_dim": 4})
    trainer_class(backend)(config, tmp_path, progress=False).fit()
    history = results.read_history(tmp_path / results.HISTORY)
    assert list(history["step"].values) == [2, 4, 6]
    evaluated = ~np.isnan(history["test_error"].values)
    # the epoch that reaches step 4, and the last one
    assert list(evaluated) == [False, True, True]
    for name in ("mutual_info_y_a", "a_std", "test_error_a1", "test_error_a100", "eval_seconds"):
        values = history[name].values
        assert np.all(np.isnan(values[~evaluated])) and np.all(np.isfinite(values[evaluated]))
    assert np.all(history["mutual_info_y_a"].values[evaluated] >= 0)
    assert np.all(history["mutual_info_y_a"].values[evaluated] <= math.log(10) + 1e-9)
    # the test error of the records is the 100-draw figure (classify_samples = 100)
    np.testing.assert_array_equal(history["test_error"].values[evaluated],
                                  history["test_error_a100"].values[evaluated])


def test_eval_every_domain():
    with pytest.raises(UserError, match="--eval-every"):
        TrainConfig(model="m2", eval_every=0)


def test_presets_apply_and_list_differences():
    spec = registry.get("adgm")
    config = resolve(spec, {"preset": "workshop"})
    assert config.preset == "workshop"
    assert config.num_particles == 10 and config.alpha == 1200.0 and config.validation_size == 0
    assert config.hparams["batch_norm"] is False and config.hparams["train_q_a"] is False
    # the user's own options still win over the preset
    assert resolve(spec, {"preset": "workshop", "num_particles": 2}).num_particles == 2
    sdgm = resolve(registry.get("sdgm", "numpyro"), {"preset": "icml"})
    assert sdgm.num_particles == 5 and sdgm.hparams["batch_norm"] is True
    assert sdgm.weight_prior_std == 1.0 and sdgm.hparams["classification_log_mean"] is False
    lines = presets.describe(presets.get("adgm", "workshop"), spec, defaults())
    assert any("p(a)" in line for line in lines) and any("--num-particles" in line for line in lines)
    with pytest.raises(UserError, match="no preset 'icml'"):
        resolve(spec, {"preset": "icml"})


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_frozen_q_a_stays_at_its_initial_values(backend, tmp_path):
    if backend == "numpyro":
        pytest.importorskip("jax")
    from ppl_dgm.backends import trainer_class

    spec = registry.get("adgm", backend)
    # the workshop preset: q(a|x) out of training, with a weight prior that would move it
    config = resolve(spec, {"preset": "workshop", "dataset": "digits", "epochs": 1,
                            "steps_per_epoch": 3, "num_particles": 2},
                     {"hidden": [16], "a_dim": 4, "z_dim": 4})
    trainer = trainer_class(backend)(config, tmp_path, progress=False)

    def snapshot():
        if backend == "pyro":
            return {n: p.detach().clone().numpy() for n, p in trainer.pair.named_parameters()}
        import jax

        flat = jax.tree_util.tree_flatten_with_path(jax.device_get(trainer.params))[0]
        return {jax.tree_util.keystr(path): np.array(v) for path, v in flat}

    before = snapshot()
    trainer.fit()
    after = snapshot()
    # q(a|x): the Pyro guide's a_net and a_head (the model's p.a_net is p(a|x,y,z)), NumPyro's q_a
    q_a = [n for n in before if n.startswith(("q.a_net.", "q.a_head.")) or "'q_a$params'" in n]
    others = [n for n in before if n not in q_a and "batch_stats" not in n]
    assert q_a and others
    for name in q_a:
        np.testing.assert_array_equal(before[name], after[name])
    assert any(not np.array_equal(before[n], after[n]) for n in others)


def test_branch_starts_from_the_source_runs_parameters_and_batches(tmp_path):
    """--init-from: the branch starts where the source run stopped: its parameters, its step count
    and the state of its batch generator (the next batches are the ones the source would draw);
    the branch's records continue the step count; another seed (other data) is refused."""
    jax = pytest.importorskip("jax")
    from ppl_dgm.training.numpyro_loop import NumPyroTrainer

    spec = registry.get("adgm", "numpyro")
    base = {"dataset": "digits", "steps_per_epoch": 3, "validation_size": 0, "classify_samples": 1}
    # the networks of the tests above: the same compiled programs (JAX's caches), a third less time
    tiny = {"hidden": [16], "a_dim": 4, "z_dim": 4}
    source = NumPyroTrainer(resolve(spec, {**base, "epochs": 1}, tiny), tmp_path / "src",
                            progress=False)
    source.fit()
    branch = NumPyroTrainer(resolve(spec, {**base, "epochs": 2, "init_from": str(tmp_path / "src"),
                                           "alpha": 5.0}, tiny), tmp_path / "branch",
                            progress=False)
    branch.before_fit()
    assert branch.step == 3 and branch.epoch == 1
    want = jax.device_get(source.params)
    got = jax.device_get(branch.params)
    for name in want:
        for a, b in zip(jax.tree_util.tree_leaves(want[name]), jax.tree_util.tree_leaves(got[name]),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    # the same batch sequence: the generator is where the source left it after epoch 1
    assert branch.rng.bit_generator.state == source.rng.bit_generator.state
    branch.fit()
    assert list(results.read_history(tmp_path / "branch" / results.HISTORY)["step"].values) == [6]
    with pytest.raises(UserError, match="other data"):
        NumPyroTrainer(resolve(spec, {**base, "epochs": 2, "seed": 1,
                                      "init_from": str(tmp_path / "src")}, tiny),
                       tmp_path / "bad", progress=False).before_fit()
