"""NumPyro CaGeM against the Pyro pair (whose bounds ``tests/test_cagem.py`` checks against sums
written out by hand): the Pyro pair's weights copied into the NumPyro pair give the same TraceEnum
ELBO (labelled, unlabelled, ``--labels 0``; batch norm in training and in evaluation mode) and the
same IW log-weights with y summed exactly, with the guide's Gaussian noise fixed to the same values;
and a short CLI run on digits without labels.
"""

import json
import math
import warnings
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers

from ppl_dgm import registry
from ppl_dgm.cli import main
from ppl_dgm.infer.numpyro_importance import log_weight
from ppl_dgm.infer.numpyro_objectives import EnumELBO
from ppl_dgm.numpyro_pair import NumPyroPair

X_DIM, B, BETA, ALPHA = 7, 5, 0.6, 2.5
Z_DIMS, HIDDEN = [3, 2], [6, 4]


def info(n_classes=3, n_labelled=10):
    return SimpleNamespace(x_dim=X_DIM, n_classes=n_classes, n_labelled=n_labelled)


def hparams(n_clusters=None):
    return {"z_dims": Z_DIMS, "hidden_dims": HIDDEN, "batch_norm": True,
            "n_clusters": n_clusters, "alpha": ALPHA}


def torch_pair(n_labelled, n_clusters, train):
    import torch

    torch.manual_seed(0)
    pair = registry.get("cagem").builder()(hparams(n_clusters), info(n_labelled=n_labelled))
    for p in pair.parameters():
        p.data.normal_(0, 0.5)
    for name, buffer in pair.named_buffers():
        if name.endswith("running_mean"):
            buffer.normal_(0, 0.5)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    return pair.train(train)


# ------------------------------------------------------------------ torch weights -> flax
def _np(t):
    return jnp.asarray(t.detach().numpy())


def _mlp(m, stats):
    """Flax ``MultiInputMLP`` variables from a torch ``MultiInputMLP``."""
    from torch import nn

    out = {}
    if not stats:
        for i, lin in enumerate(m.inputs):
            out[f"input_{i}"] = {"kernel": _np(lin.weight).T,
                                 **({"bias": _np(lin.bias)} if lin.bias is not None else {})}
        dense = [layer for layer in m.rest if isinstance(layer, nn.Linear)]
        out.update({f"dense_{j + 1}": {"kernel": _np(d.weight).T, "bias": _np(d.bias)}
                    for j, d in enumerate(dense)})
    bns = [layer for layer in [*m.first, *m.rest] if isinstance(layer, nn.BatchNorm1d)]
    out.update({f"bn_{j}": _bn(b, stats) for j, b in enumerate(bns)})
    return out


def _bn(m, stats):
    if stats:
        return {"mean": _np(m.running_mean), "var": _np(m.running_var)}
    return {"scale": _np(m.weight), "bias": _np(m.bias)}


def _gaussian(layer, stats):
    head = layer.head
    if stats:
        return {"mlp": _mlp(layer.mlp, True),
                "head": {"loc_bn": _bn(head.loc_bn, True), "logvar_bn": _bn(head.logvar_bn, True)}}
    return {"mlp": _mlp(layer.mlp, False),
            "head": {"loc": {"kernel": _np(head.loc.weight).T, "bias": _np(head.loc.bias)},
                     "logvar": {"kernel": _np(head.logvar.weight).T,
                                "bias": _np(head.logvar.bias)},
                     "loc_bn": _bn(head.loc_bn, False), "logvar_bn": _bn(head.logvar_bn, False)}}


def _logits(mlp, linear, stats):
    if stats:
        return {"mlp": _mlp(mlp, True)}
    return {"mlp": _mlp(mlp, False),
            "logits": {"kernel": _np(linear.weight).T, "bias": _np(linear.bias)}}


def copied_params(tp):
    networks = {"p_z1": lambda s: _gaussian(tp.p.p_z1, s),
                "p_x": lambda s: _logits(tp.p.decoder, tp.p.logits, s),
                "q_z1": lambda s: _gaussian(tp.q.q_z1, s),
                "classifier": lambda s: _logits(tp.q.classifier, tp.q.y_logits, s),
                "q_z2": lambda s: _gaussian(tp.q.q_z2, s)}
    params = {}
    for name, convert in networks.items():
        params[f"{name}$params"] = convert(False)
        params[f"{name}$state"] = {"batch_stats": convert(True)}
    return params


# ------------------------------------------------------------------ fixed noise, both backends
def _normal_base(fn):
    while not hasattr(fn, "loc"):
        fn = fn.base_dist
    return fn


def fixed_noise(eps):
    def value(msg):
        if msg["type"] == "sample" and msg["name"] in eps and not msg["is_observed"]:
            base = _normal_base(msg["fn"])
            return base.loc + eps[msg["name"]] * base.scale
        return None
    return value


def pyro_fixed(pair, eps):
    import torch
    from pyro import poutine
    from torch import nn

    from ppl_dgm.pair import Pair

    class FixNoise(poutine.messenger.Messenger):
        def _pyro_sample(self, msg):
            if msg["name"] in eps and not msg["is_observed"]:
                base = _normal_base(msg["fn"])
                msg["value"] = base.loc + torch.as_tensor(eps[msg["name"]]) * base.scale

    class Guide(nn.Module):
        def __init__(self, q):
            super().__init__()
            self.q = q

        def forward(self, *args, **kwargs):
            with FixNoise():
                return self.q(*args, **kwargs)

    return Pair(pair.p, Guide(pair.q), iw_enumerate=True)


def data(seed, n_classes=3):
    rng = np.random.default_rng(seed)
    x = (rng.random((B, X_DIM)) < 0.5).astype(np.float32)
    y = rng.integers(n_classes, size=B).astype(np.int64)
    eps = {"z1": rng.standard_normal((B, Z_DIMS[0])).astype(np.float32),
           "z2": rng.standard_normal((B, Z_DIMS[1])).astype(np.float32)}
    return x, y, eps


@pytest.mark.parametrize("n_labelled,n_clusters,train", [(10, None, True), (0, 5, False)])
def test_pyro_weights_give_the_same_elbo_and_iw_weights(n_labelled, n_clusters, train):
    import torch
    from pyro.infer import TraceEnum_ELBO

    from ppl_dgm.infer.importance import log_weights

    tp = torch_pair(n_labelled, n_clusters, train)
    pair = registry.get("cagem", "numpyro").builder()(hparams(n_clusters),
                                                       info(n_labelled=n_labelled))
    params = copied_params(tp)
    x, y, eps = data(1)
    guide = handlers.substitute(pair.guide, substitute_fn=fixed_noise(eps))
    cases = [(None, BETA), (None, 0.0)] + ([(y, BETA)] if n_labelled else [])
    rtol = 5e-5 if train else 2e-6  # flax computes the batch variance as E[h^2] - E[h]^2
    for labels, beta in cases:
        y_arg = None if labels is None else jnp.asarray(labels, jnp.int32)
        # jit-compiled as in the trainer: beta is traced (a traced 0 scales, a Python 0 masks)
        loss = jax.jit(lambda p, b, y_arg=y_arg: EnumELBO(1, 1).loss(
            jax.random.PRNGKey(0), p, pair.model, guide, jnp.asarray(x), y_arg, beta=b,
            train=train))(params, jnp.asarray(beta))
        f = pyro_fixed(tp, eps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
                f.model, f.guide, torch.tensor(x), None if labels is None else torch.tensor(labels),
                beta=beta).item()
        np.testing.assert_allclose(float(loss), expected, rtol=rtol, atol=1e-4)
    if not train:  # the IW weight of one particle, y summed exactly
        fixed_pair = NumPyroPair(pair.model, guide, iw_enumerate=True)
        got = log_weight(fixed_pair, params, jnp.asarray(x), jax.random.PRNGKey(1))
        with torch.no_grad():
            expected = log_weights(pyro_fixed(tp, eps), torch.tensor(x), 1)[0].numpy()
        np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-6, atol=1e-4)


def test_cli_numpyro_cagem_unsupervised_on_digits(tmp_path):
    """--labels 0 with the NumPyro backend: trains, evaluates (IW with y summed, clustering) and
    samples one row per cluster."""
    out = tmp_path / "run"
    train = ["train", "cagem", "--backend", "numpyro", "--dataset", "digits", "--labels", "0",
             "--epochs", "1", "--steps-per-epoch", "4", "--device", "cpu", "--out", str(out),
             "--no-progress", "--set", "z_dims=[4,2]", "--set", "hidden_dims=[16,8]",
             "--set", "n_clusters=11"]
    evaluate = ["evaluate", str(out), "--iw-samples", "20", "--subset", "50", "--device", "cpu"]
    sample = ["sample", str(out), "--per-class", "2", "--device", "cpu"]
    # in this process (the session's XLA flags, conftest.py: cheap compilation, one thread)
    for args in (train, evaluate, sample):
        assert main(args) == 0, args
    summary = json.loads((out / "summary.json").read_text())
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert summary["backend"] == "numpyro" and summary["n_labelled"] == 0
    assert summary["test_error"] is None and "test_error" not in evaluation
    assert len(evaluation["cluster_sizes"]) == 11 and sum(evaluation["cluster_sizes"]) == summary["n_test"]
    ll = evaluation["test_log_likelihood"]
    assert math.isfinite(ll) and ll >= evaluation["test_elbo"] - 0.5
    assert (out / "samples.png").is_file()
