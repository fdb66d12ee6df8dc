"""The LVAE authors' script as options (issue 20): ``--preset authors`` of vae and lvae, Adam's
epsilon on both backends against a first Adam step written out by hand, the ladder guide's
``only_mu_up`` bottom-up pass against the same pass computed layer by layer, and the wider
generative networks of ``top_down_widths=lower`` (casperkaae/LVAE run_models.py: hidden_sizes[i]
for p(z_i | z_i+1) of an unshared ladder; hidden_sizes[i+1] in the VAE and the ladder's encoder).
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ppl_dgm import config, presets, registry
from ppl_dgm.cli import main
from ppl_dgm.errors import UserError

X_DIM, Z_DIMS, HIDDEN = 7, [4, 3, 2], [12, 8, 6]
AUTHORS = {"share_top_down": False, "only_mu_up": True, "top_down_widths": "lower"}


def hparams(guide="ladder", batch_norm=False, **extra):
    return {"guide": guide, "z_dims": Z_DIMS, "hidden_dims": HIDDEN, "activation": "leaky_relu",
            "batch_norm": batch_norm, "min_scale": 1e-5 ** 0.5, **extra}


# ------------------------------------------------------------------------------------- preset
@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
@pytest.mark.parametrize("model", ["vae", "lvae"])
def test_authors_preset_sets_every_row_of_the_script(model, backend):
    cfg = config.resolve(registry.get(model, backend), {"preset": "authors"})
    assert cfg.preset == "authors"
    assert (cfg.adam_eps, cfg.clip_norm, cfg.clip_value) == (1e-4, 4.0, 0.9)
    assert cfg.clip_order == "norm_then_value" and cfg.validation_size == 0
    assert (cfg.lr, cfg.batch_size, cfg.warmup_epochs, cfg.epochs) == (2e-4, 256, 200, 2000)
    for key, value in AUTHORS.items():
        # the ladder options are the LVAE's; the VAE's configuration does not carry them
        assert cfg.hparams[key] == value if model == "lvae" else key not in cfg.hparams
    # the user's options still win over the preset
    mine = config.resolve(registry.get(model, backend), {"preset": "authors", "adam_eps": 1e-6})
    assert mine.adam_eps == 1e-6


def test_registered_recipe_differs_from_the_preset_where_the_registry_says():
    lvae = config.resolve(registry.get("lvae"), {})
    assert lvae.adam_eps == 1e-8 and lvae.clip_norm is None and lvae.clip_value is None
    assert lvae.validation_size is None
    assert (lvae.hparams["share_top_down"], lvae.hparams["only_mu_up"],
            lvae.hparams["top_down_widths"]) == (True, False, "upper")
    # the ladder options are not the VAE's to set
    with pytest.raises(UserError, match="vae has no hyperparameter 'only_mu_up'"):
        config.resolve(registry.get("vae"), {}, {"only_mu_up": True})


def test_models_preset_lists_what_still_differs(capsys):
    assert main(["models", "lvae", "--preset", "authors", "--backend", "pyro"]) == 0
    out = capsys.readouterr().out
    for text in ("--adam-eps: 1e-08 -> 0.0001", "--clip-norm", "--clip-value",
                 "--set only_mu_up: False -> True", "--set top_down_widths: 'upper' -> 'lower'",
                 "--set share_top_down: True -> False", "--validation-size", "still differs",
                 "--bn-stats train", "IW-5000 on all 10,000 test images", "epsilon 1e-10"):
        assert text in out, text
    preset = presets.get("vae", "authors")
    assert len(preset.differences) >= 8


@pytest.mark.parametrize("bad, match", [
    ({"top_down_widths": "wide"}, "top_down_widths=wide is not one of"),
    ({"top_down_widths": "lower", "share_top_down": True}, "add --set share_top_down=false"),
])
def test_bad_ladder_options_get_one_line(bad, match):
    with pytest.raises(UserError, match=match):
        registry.get("lvae").builder()(hparams(**bad), SimpleNamespace(x_dim=X_DIM))


# ------------------------------------------------------------------------------------- Adam eps
def test_adam_eps_reaches_both_optimisers():
    """The first Adam step is -lr * g / (|g| + eps) (both bias corrections are exact at step 1):
    with g = 1e-4, eps = 1e-4 halves it; eps = 1e-8 leaves it at about -lr."""
    import jax.numpy as jnp

    from ppl_dgm.training import loop, numpyro_loop

    lr, g = 1e-3, 1e-4
    for eps in (1e-4, 1e-8):
        cfg = config.TrainConfig(model="lvae", lr=lr, adam_eps=eps)
        expected = -lr * g / (g + eps)
        p = torch.nn.Parameter(torch.zeros(3))
        opt, _ = loop.make_optimizer(cfg, [p])
        p.grad = torch.full((3,), g)
        opt.step()
        np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-5)
        tx = numpyro_loop.make_optimizer(cfg, steps_per_epoch=10)
        params = {"w": jnp.zeros(3)}
        updates, _ = tx.update({"w": jnp.full(3, g)}, tx.init(params), params)
        np.testing.assert_allclose(np.asarray(updates["w"]), expected, rtol=1e-5)
    with pytest.raises(UserError, match="--adam-eps must be > 0"):
        config.TrainConfig(model="lvae", adam_eps=0.0)


# ------------------------------------------------------------------------------------- networks
def test_pyro_only_mu_up_and_wider_generative_networks():
    from pyro import poutine

    pair = registry.get("lvae").builder()(hparams(**AUTHORS), SimpleNamespace(x_dim=X_DIM))
    p, q = pair.p, pair.q
    # p(z_i | z_i+1) as wide as the level below; the guide's own top-down as the level above
    assert [net.mlp.inputs[0].out_features for net in p.top_down] == HIDDEN[:-1]
    assert [net.mlp.inputs[0].out_features for net in q.top_down] == HIDDEN[1:]
    assert q.top_down is not p.top_down
    # bottom-up from the mean estimates: layer k > 0 reads mu_hat_k (size z_dims[k-1])
    assert [layer.mlp.inputs[0].in_features for layer in q.up] == [X_DIM, *Z_DIMS[:-1]]
    x = torch.bernoulli(torch.full((5, X_DIM), 0.4))
    with torch.no_grad():
        d = x
        for layer in q.up:  # by hand: each MLP reads the previous head's mean
            loc, scale = layer.head(layer.mlp(d))
            d = loc
        trace = poutine.trace(q).get_trace(x)
    top = trace.nodes[f"z{len(Z_DIMS)}"]["fn"].base_dist
    torch.testing.assert_close(top.loc, loc)
    torch.testing.assert_close(top.scale, scale)
    # the VAE's model keeps the registered widths, whatever the (ladder-only) options say
    vae = registry.get("vae").builder()(hparams("hierarchical", **AUTHORS),
                                        SimpleNamespace(x_dim=X_DIM))
    assert [net.mlp.inputs[0].out_features for net in vae.p.top_down] == HIDDEN[1:]


def test_numpyro_only_mu_up_and_wider_generative_networks():
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    from ppl_dgm.nn.flax_blocks import apply

    pair = registry.get("lvae", "numpyro").builder()(hparams(**AUTHORS),
                                                     SimpleNamespace(x_dim=X_DIM))
    x = jnp.asarray(np.random.default_rng(0).random((5, X_DIM)) < 0.4, jnp.float32)
    guide_trace = handlers.trace(handlers.seed(pair.guide, 0)).get_trace(x, None)
    model_trace = handlers.trace(handlers.seed(handlers.replay(pair.model, guide_trace),
                                               1)).get_trace(x, None)
    params = {name: site["value"] for tr in (guide_trace, model_trace)
              for name, site in tr.items() if site["type"] == "param"}

    def width(name):  # units of the first hidden layer of a registered network
        return params[f"{name}$params"]["mlp"]["input_0"]["kernel"].shape

    L = len(Z_DIMS)
    assert [width(f"top_down_{k}")[1] for k in range(L - 1)] == HIDDEN[:-1]
    assert [width(f"q_top_down_{k}")[1] for k in range(L - 1)] == HIDDEN[1:]
    assert [width(f"q_up_{k}")[0] for k in range(L)] == [X_DIM, *Z_DIMS[:-1]]
    d = x
    for k, layer in enumerate(pair.guide.up):  # by hand, from the parameters
        _, loc, scale = apply(layer, params, f"q_up_{k}", d)
        d = loc
    top = guide_trace[f"z{L}"]["fn"].base_dist
    np.testing.assert_allclose(np.asarray(top.loc), np.asarray(loc), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(top.scale), np.asarray(scale), rtol=1e-5, atol=1e-6)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a: bool(jnp.isfinite(a).all()),
                                                         params))


# --------------------------------------------------------------------- curves with no validation
@pytest.mark.parametrize("validation_size", [0, 60])
def test_learning_curve_without_a_validation_slice_is_the_test_elbo(tmp_path, validation_size):
    """The authors' recipe holds no validation slice out (--validation-size 0): the held-out curve
    is then the test ELBO (first 1,000 test points) with its per-site KL, named for what it is;
    with a slice it stays the validation ELBO."""
    from ppl_dgm import results

    out = tmp_path / "run"
    assert main(["train", "vae", "--dataset", "digits", "--epochs", "2", "--steps-per-epoch", "2",
                 "--validation-size", str(validation_size), "--device", "cpu", "--no-progress",
                 "--set", "z_dims=[3,2]", "--set", "hidden_dims=[8,6]", "--out", str(out)]) == 0
    history = results.read_history(out / results.HISTORY)
    named, other = (("test_elbo", "validation_elbo") if validation_size == 0
                    else ("validation_elbo", "test_elbo"))
    assert named in history and other not in history, list(history.data_vars)
    values = history[named].values
    assert np.isfinite(values).all() and (values < 0).all(), values
    assert set(history["site"].values) == {"z1", "z2"}
    assert np.isfinite(history["kl"].values).all()
