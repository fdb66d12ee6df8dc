"""Steps compiled together (``--scan-steps``, ``lax.scan``) give the updates of one step at a time.

The reference is the ordinary NumPyro trainer, one compiled step per call; the scanned trainer runs
chunks of 3 steps plus a remainder step (7 steps per epoch), over two epochs with KL warm-up (so the
per-step betas matter). Parameters, optimiser state and the recorded losses must agree to float
tolerance (XLA may fuse a scanned step differently, so not bit for bit).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from ppl_dgm import registry
from ppl_dgm.config import resolve
from ppl_dgm.errors import UserError

jax = pytest.importorskip("jax")

CONFIG = {"dataset": "digits", "labels": 50, "batch_size": 40, "labelled_batch_size": 20,
          "steps_per_epoch": 7, "epochs": 2, "warmup_epochs": 1.5, "device": "cpu"}
NET = {"z_dim": 4, "hidden": [16]}


def trained(tmp_path, scan_steps: int):
    """The checkpoint after training, and the initial SVI state (before ``fit``)."""
    from ppl_dgm.training.numpyro_loop import NumPyroTrainer

    config = resolve(registry.get("m2", "numpyro"), {**CONFIG, "scan_steps": scan_steps}, NET)
    run = tmp_path / f"scan{scan_steps}"
    trainer = NumPyroTrainer(config, run, progress=False)
    initial = jax.device_get(trainer.svi_state)
    trainer.fit()
    with open(run / "checkpoint.pkl", "rb") as f:
        state = pickle.load(f)
    return state, initial


def test_scanned_epoch_equals_step_by_step(tmp_path):
    (one, initial), (scanned, _) = trained(tmp_path, 0), trained(tmp_path, 3)
    assert (one["step"], scanned["step"]) == (14, 14)
    a, b = (jax.tree_util.tree_leaves(s["svi_state"]) for s in (one, scanned))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-6)
    # the parameters moved from their initial values: the comparison is not of two no-ops
    initial = jax.tree_util.tree_leaves(initial)
    assert sum(not np.allclose(np.asarray(x), np.asarray(y)) for x, y in zip(a, initial, strict=True)) >= 4
    losses = [[record["loss"] for record in s["history"]] for s in (one, scanned)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


def test_scan_steps_refused_by_the_pyro_backend(tmp_path):
    from ppl_dgm.training.loop import Trainer

    config = resolve(registry.get("m2"), {**CONFIG, "scan_steps": 4}, NET)
    with pytest.raises(UserError, match="--backend numpyro"):
        Trainer(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_finite_check_step_refused_by_the_numpyro_backend(tmp_path):
    from ppl_dgm.training.numpyro_loop import NumPyroTrainer

    config = resolve(registry.get("m2", "numpyro"), {**CONFIG, "finite_check": "step"}, NET)
    with pytest.raises(UserError, match="--finite-check"):
        NumPyroTrainer(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
