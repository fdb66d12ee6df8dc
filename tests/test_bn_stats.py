"""``ppl-dgm evaluate --bn-stats train``: batch-norm statistics from one training-mode pass over the
training set (the LVAE authors' evaluation), both backends.

After the pass, evaluation mode must compute what training mode computes on the whole training set
as one batch (checked on the ladder guide's deterministic bottom-up path against a train-mode call,
and on the first layer against the mean and variance of W x + b by hand); an evaluation with
``--bn-stats train`` must not depend on the running averages (corrupted in the checkpoint, its
figures do not move, while ``--bn-stats running`` ones do); the log-likelihood line carries the
share of Pareto k > 0.7 beside it.
"""

import copy
import json
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ppl_dgm import registry, results
from ppl_dgm.cli import main
from ppl_dgm.errors import UserError
from ppl_dgm.evaluate import check_evaluation_options, evaluate_run

X_DIM, N = 6, 64


def lvae_hparams(**extra):
    return {"guide": "ladder", "z_dims": [3, 2], "hidden_dims": [8, 5], "activation": "leaky_relu",
            "batch_norm": True, "min_scale": 1e-5 ** 0.5, "share_top_down": True, **extra}


def points(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, X_DIM)) < rng.random(X_DIM)).astype(np.float32)


def test_pyro_pass_gives_the_whole_batch_statistics():
    from ppl_dgm.infer.batch_norm_stats import pyro_training_pass

    torch.manual_seed(0)
    pair = registry.get("lvae").builder()(lvae_hparams(), SimpleNamespace(x_dim=X_DIM))
    x = torch.as_tensor(points())
    with torch.no_grad():  # what training mode computes on the whole set as one batch
        twin = copy.deepcopy(pair).train()
        expected = twin.q.up(x)
    layers = pyro_training_pass(pair, x, seed=3)
    assert layers == sum(isinstance(m, torch.nn.BatchNorm1d) for m in pair.modules())
    assert all(m.training for m in pair.modules())  # the caller's mode is restored
    pair.eval()
    with torch.no_grad():
        got = pair.q.up(x)
        first = pair.q.up[0].mlp.inputs[0]  # by hand: the first layer's input is W x + b
        h = (x @ first.weight.T + first.bias).double()
    for (loc, scale), (loc_e, scale_e) in zip(got, expected, strict=True):
        torch.testing.assert_close(loc, loc_e, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(scale, scale_e, rtol=1e-4, atol=1e-5)
    bn = pair.q.up[0].mlp.first[0]
    torch.testing.assert_close(bn.running_mean.double(), h.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), h.var(0, unbiased=False), rtol=1e-5,
                               atol=1e-6)


def test_pyro_pass_refuses_a_pair_without_batch_norm():
    from ppl_dgm.infer.batch_norm_stats import pyro_training_pass

    pair = registry.get("lvae").builder()(lvae_hparams(batch_norm=False),
                                          SimpleNamespace(x_dim=X_DIM))
    with pytest.raises(UserError, match="no batch-norm layers"):
        pyro_training_pass(pair, torch.as_tensor(points()))


def test_numpyro_pass_gives_the_whole_batch_statistics():
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    from ppl_dgm.infer.batch_norm_stats import numpyro_training_pass

    pair = registry.get("lvae", "numpyro").builder()(lvae_hparams(), SimpleNamespace(x_dim=X_DIM))
    x = jnp.asarray(points())
    guide_trace = handlers.trace(handlers.seed(pair.guide, 0)).get_trace(x[:4], None)
    model_trace = handlers.trace(handlers.seed(handlers.replay(pair.model, guide_trace),
                                               1)).get_trace(x[:4], None)
    params = {name: site["value"] for tr in (guide_trace, model_trace)
              for name, site in tr.items() if site["type"] in ("param", "mutable")}
    # running averages far from the truth, so that a pass that kept them would show
    params = {k: (jax.tree_util.tree_map(lambda a: a + 3.0, v) if k.endswith("$state") else v)
              for k, v in params.items()}
    states, layers = numpyro_training_pass(pair, params, x, jax.random.PRNGKey(5))
    assert set(states) == {k for k in params if k.endswith("$state")}
    means = [path for s in states.values()
             for path, _ in jax.tree_util.tree_flatten_with_path(s)[0]
             if jax.tree_util.keystr(path).endswith("['mean']")]
    assert layers == len(means) > 0
    new = {**params, **states}
    d_train, d_eval = x, x
    for k, layer in enumerate(pair.guide.up):  # the deterministic bottom-up path, layer by layer
        name = f"q_up_{k}"
        variables = {"params": params[f"{name}$params"], **params[f"{name}$state"]}
        (d_train, loc_t, scale_t), _ = layer.apply(variables, d_train, train=True,
                                                   mutable=["batch_stats"])
        variables = {"params": new[f"{name}$params"], **new[f"{name}$state"]}
        d_eval, loc_e, scale_e = layer.apply(variables, d_eval, train=False)
        for a, b in ((d_eval, d_train), (loc_e, loc_t), (scale_e, scale_t)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)
    kernel = params["q_up_0$params"]["mlp"]["input_0"]  # by hand: the first layer's W x + b
    h = np.asarray(x, np.float64) @ np.asarray(kernel["kernel"], np.float64) + np.asarray(
        kernel["bias"], np.float64)
    stats = states["q_up_0$state"]["batch_stats"]["mlp"]["bn_0"]
    np.testing.assert_allclose(np.asarray(stats["mean"]), h.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(stats["var"]), h.var(0), rtol=1e-4, atol=1e-6)


def test_bad_bn_stats_is_one_line():
    with pytest.raises(UserError, match=r"--bn-stats must be one of \['running', 'train'\]"):
        check_evaluation_options(bn_stats="batch")


# ------------------------------------------------------------------------------------- evaluate
def _train(tmp_path, backend):
    out = tmp_path / f"lvae-{backend}"
    assert main(["train", "lvae", "--backend", backend, "--dataset", "digits", "--epochs", "1",
                 "--steps-per-epoch", "3", "--device", "cpu", "--out", str(out), "--no-progress",
                 "--batch-size", "32", "--eval-batch-size", "200", "--set", "z_dims=[3,2]",
                 "--set", "hidden_dims=[8,5]"]) == 0
    return out


def _corrupt_running_averages(run, backend):
    """Add 5 to every stored batch-norm mean and multiply every variance by 7, in the checkpoint."""
    if backend == "pyro":
        path = run / results.CHECKPOINT
        state = torch.load(path, weights_only=False)
        for key, value in state["pair"].items():
            if key.endswith("running_mean"):
                value += 5.0
            elif key.endswith("running_var"):
                value *= 7.0
        torch.save(state, path)
        return
    import jax

    path = run / "checkpoint.pkl"
    with open(path, "rb") as f:
        state = pickle.load(f)
    svi = state["svi_state"]

    def corrupt(path, leaf):
        name = jax.tree_util.keystr(path)
        return leaf * 7.0 if "'var'" in name else leaf + 5.0

    mutable = jax.tree_util.tree_map_with_path(corrupt, svi.mutable_state)
    state["svi_state"] = svi._replace(mutable_state=mutable)
    with open(path, "wb") as f:
        pickle.dump(state, f)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_bn_stats_train_does_not_depend_on_the_running_averages(tmp_path, backend, capsys):
    run = _train(tmp_path, backend)
    opts = dict(iw_samples=12, subset=30, device="cpu", seed=1, progress=False)
    running = evaluate_run(run, **opts)
    train = evaluate_run(run, bn_stats="train", **opts)
    assert running["bn_stats"] == "running" and train["bn_stats"] == "train"
    assert train["bn_stats_points"] == results.read_json(run / results.SUMMARY)["n_unlabelled"]
    assert train["bn_stats_layers"] > 0
    _corrupt_running_averages(run, backend)
    running_bad = evaluate_run(run, **opts)
    # --bn-stats train on the corrupted run through the command line (the same options): its
    # record, the statistics named, the Pareto share beside the log-likelihood
    capsys.readouterr()
    assert main(["evaluate", str(run), "--iw-samples", "12", "--subset", "30", "--device", "cpu",
                 "--seed", "1", "--bn-stats", "train"]) == 0
    out = capsys.readouterr().out
    train_bad = json.loads((run / results.EVALUATION).read_text())
    assert train_bad["bn_stats"] == "train"
    for key in ("test_log_likelihood", "test_elbo"):
        assert train_bad[key] == pytest.approx(train[key], rel=1e-5, abs=1e-4), key
        assert abs(running_bad[key] - running[key]) > 1.0, key
    assert "bn_stats: train (one pass over" in out
    line = next(t for t in out.splitlines() if t.startswith("test_log_likelihood:"))
    assert "(IW-12 on 30 test points; Pareto k > 0.7 for" in line


def test_bn_stats_train_refuses_a_run_without_batch_norm(tmp_path, capsys):
    out = tmp_path / "plain"
    assert main(["train", "vae", "--dataset", "digits", "--epochs", "1", "--steps-per-epoch", "1",
                 "--device", "cpu", "--out", str(out), "--no-progress", "--set", "z_dims=[3,2]",
                 "--set", "hidden_dims=[8,5]", "--set", "batch_norm=false"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--iw-samples", "0", "--bn-stats", "train"]) == 2
    err = capsys.readouterr().err
    assert "has no batch-norm layers" in err and len(err.strip().splitlines()) == 1
