"""Data-parallel training: DDP over 2 gloo processes and JAX sharding over 2 host devices give the
update of one process with the whole batch; DDP's update equals one written out by hand (clipping
off and on, with batch norm), and a loss of the wrong scale fails that comparison."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from ppl_dgm import registry, results
from ppl_dgm.config import resolve
from ppl_dgm.data import load_dataset
from ppl_dgm.pair import Pair
from ppl_dgm.training import loop
from ppl_dgm.training.loop import Trainer


class DeltaGuide(nn.Module):
    """q(y | x) enumerated, z = enc(x, y) as a point mass: with binary data (no binarisation noise)
    the objective has no Monte Carlo noise, so 1 and 2 processes must agree up to rounding."""

    def __init__(self, x_dim: int, n_classes: int, z_dim: int, alpha: float) -> None:
        super().__init__()
        self.n_classes, self.alpha = n_classes, alpha
        self.classifier = nn.Linear(x_dim, n_classes)
        self.encode_x = nn.Linear(x_dim, z_dim)
        self.encode_y = nn.Linear(n_classes, z_dim, bias=False)

    def forward(self, x, y=None, *, beta=1.0):
        from ppl_dgm.guides.label import label_site

        with pyro.plate("data", x.shape[0]):
            y = label_site(self.classifier(x), y, self.alpha, beta)
            z = self.encode_x(x) + self.encode_y(F.one_hot(y, self.n_classes).to(x.dtype))
            with poutine.scale(scale=beta):
                pyro.sample("z", dist.Delta(z).to_event(1))

    def classify(self, x, num_samples=1):
        return torch.softmax(self.classifier(x), -1)


def delta_pair(config, info, spec=None):
    from ppl_dgm.models.m2 import M2Model

    p = M2Model(info.x_dim, info.n_classes, z_dim=3, hidden=[8], batch_norm=False)
    return Pair(p, DeltaGuide(info.x_dim, info.n_classes, 3, alpha=1.0))


@pytest.fixture
def binary_digits(tmp_path):
    d = load_dataset("digits")
    path = tmp_path / "binary_digits.npz"
    np.savez(path, x_train=((d.x_train > 0.5) * 255).astype(np.uint8), y_train=d.y_train,
             x_test=((d.x_test > 0.5) * 255).astype(np.uint8), y_test=d.y_test)
    return str(path)


def config(data, epochs):
    return resolve(registry.get("m2"), {"dataset": data, "labels": 50, "batch_size": 40,
                                        "labelled_batch_size": 20, "steps_per_epoch": 3,
                                        "epochs": epochs, "device": "cpu", "validation_size": 100,
                                        "threads": 1}, {})


def _ddp_trainer(rank, world, port, data, run_dirs, epochs=2):
    """The trainer of process ``rank`` of ``world`` (the environment torchrun would set)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from ppl_dgm.training.distributed import DistributedTrainer

    return DistributedTrainer(config(data, epochs), run_dirs[rank], progress=False)


def _rank(rank, world, port, data, run_dirs):
    trainer = _ddp_trainer(rank, world, port, data, run_dirs)
    assert trainer.world_size == world
    # each rank takes its contiguous half of every global batch
    assert trainer._shard(torch.arange(40)).tolist() == list(range(20 * rank, 20 * rank + 20))
    trainer.fit()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _state(run_dir):
    return torch.load(run_dir / results.CHECKPOINT, weights_only=False)


def one_process_then_two(rank_fn, tmp_path, data, monkeypatch):
    """The delta pair trained 2 epochs in one process (``tmp_path/one``), then ``rank_fn`` in two
    gloo processes (forked: no second import of torch), each given its own run directory."""
    monkeypatch.setattr(loop, "build_pair", delta_pair)
    one = Trainer(config(data, 2), tmp_path / "one", progress=False)
    one.fit()
    run_dirs = [tmp_path / "ddp", tmp_path / "rank1"]
    mp.start_processes(rank_fn, args=(2, _free_port(), data, run_dirs), nprocs=2,
                       start_method="fork", join=True)
    return one, run_dirs


def test_ddp_two_processes_equal_one_process(tmp_path, binary_digits, monkeypatch):
    one, run_dirs = one_process_then_two(_rank, tmp_path, binary_digits, monkeypatch)
    assert not run_dirs[1].exists(), "only rank 0 writes"
    a, b = _state(tmp_path / "one"), _state(run_dirs[0])
    assert a["step"] == b["step"] == 6
    for name, value in a["pair"].items():
        np.testing.assert_allclose(b["pair"][name], value, rtol=1e-4, atol=2e-6, err_msg=name)
    # Adam's moments hold the (global-batch) gradients: a sum instead of a mean, or half a batch,
    # would show here even where Adam's normalised step hides it
    for (i, sa), (_, sb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items(),
                                strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            scale = sa[key].abs().max().item()
            np.testing.assert_allclose(sb[key], sa[key], rtol=1e-3, atol=1e-5 * scale,
                                       err_msg=f"{key} of parameter {i}")
    h_one = results.read_history(tmp_path / "one" / results.HISTORY)
    h_ddp = results.read_history(run_dirs[0] / results.HISTORY)
    np.testing.assert_allclose(h_ddp["loss"].values, h_one["loss"].values, rtol=1e-5)
    summary = results.read_json(run_dirs[0] / results.SUMMARY)
    assert summary["world_size"] == 2 and summary["distributed_backend"] == "gloo"
    assert summary["config"]["threads"] == 1
    # --resume with another number of processes (here one) continues the same run
    longer = Trainer(config(binary_digits, 3), tmp_path / "one", progress=False)
    longer.fit(resume=True)
    resumed = Trainer(config(binary_digits, 3), run_dirs[0], progress=False)
    resumed.fit(resume=True)
    for name, value in longer.pair.state_dict().items():
        np.testing.assert_allclose(resumed.pair.state_dict()[name], value, rtol=1e-4, atol=2e-6,
                                   err_msg=name)


def _rank_stopped(rank, world, port, data, run_dirs):
    """A DDP run in which rank 1 alone receives SIGTERM after its 4th step (the first step of
    epoch 2 of 3-step epochs)."""
    import signal

    from ppl_dgm.errors import Interrupted

    trainer = _ddp_trainer(rank, world, port, data, run_dirs)
    step = trainer.train_step

    def step_then_signal(idx, idx_l):
        out = step(idx, idx_l)
        if rank == 1 and trainer.step == 4:
            trainer._stop_signal = signal.SIGTERM  # what the handler does
        return out

    trainer.train_step = step_then_signal
    try:
        trainer.fit()
    except Interrupted:
        return
    raise AssertionError("the run was not stopped")


def test_ddp_stop_in_an_epoch_resumes_as_the_uninterrupted_run(tmp_path, binary_digits, monkeypatch):
    """A signal seen by one rank stops both at the same step; rank 0 writes the checkpoint of the
    steps done (the step statistics averaged over the ranks), and one process resumes it to the
    parameters and epoch record of an uninterrupted run."""
    one, run_dirs = one_process_then_two(_rank_stopped, tmp_path, binary_digits, monkeypatch)
    state = _state(run_dirs[0])
    assert (state["epoch"], state["step"], state["in_epoch"]["steps_done"]) == (1, 4, 1)
    assert all(isinstance(v, float) for v in state["in_epoch"]["stats"].values())
    resumed = Trainer(config(binary_digits, 2), run_dirs[0], progress=False)
    resumed.fit(resume=True)
    for name, value in one.pair.state_dict().items():
        np.testing.assert_allclose(resumed.pair.state_dict()[name], value, rtol=1e-4, atol=2e-6,
                                   err_msg=name)
    h_one = results.read_history(tmp_path / "one" / results.HISTORY)
    h_resumed = results.read_history(run_dirs[0] / results.HISTORY)
    np.testing.assert_allclose(h_resumed["loss"].values, h_one["loss"].values, rtol=1e-5)


def test_ddp_refuses_batches_that_do_not_split(tmp_path, monkeypatch):
    from ppl_dgm.training import distributed

    monkeypatch.setattr(distributed, "init_process_group", lambda device: (0, 3, 0))
    with pytest.raises(ValueError, match="does not split into 3 equal shards"):
        distributed.DistributedTrainer(config("digits", 1), tmp_path / "r", progress=False)


JAX_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from ppl_dgm import registry
    from ppl_dgm.config import resolve
    from ppl_dgm.training.numpyro_loop import NumPyroTrainer
    from ppl_dgm.training.numpyro_sharded import _INDEX_ARGS, ShardedNumPyroTrainer

    # the VAE (with batch norm: its statistics must be those of the whole batch): quick to compile
    cfg = dict(dataset="digits", batch_size=40, steps_per_epoch=2, device="cpu", epochs=1,
               validation_size=100)
    out = {"devices": len(jax.devices())}
    states = {}
    for name, cls in (("one", NumPyroTrainer), ("sharded", ShardedNumPyroTrainer)):
        tr = cls(resolve(registry.get("vae", "numpyro"), cfg, {"z_dims": [2], "hidden_dims": [8]}),
                 sys.argv[1] + "/" + name, progress=False)
        tr.compile()
        losses = [float(tr.train_step(l, u)[0]) for l, u in tr._batches()]
        states[name] = jax.device_get(tr.svi_state.optim_state)
        out[name] = {"losses": losses,
                     "shardings": sorted({str(x.sharding.spec) if hasattr(x.sharding, "spec")
                                          else "single" for x in
                                          jax.tree_util.tree_leaves(tr.svi_state.optim_state)}),
                     "n_shards": len(tr._step_args(*next(tr._batches()), 0, 1.0)
                                     [_INDEX_ARGS[tr.task][-1]].addressable_shards)}
    # optim_state = (step, (params, optax state)); optax.adam's state starts with ScaleByAdamState,
    # whose first moment mu (the gradients' running mean) has the parameters' structure
    def tree(name, part):
        params, opt_state = states[name][1]
        leaves = jax.tree_util.tree_leaves(params if part == "params" else opt_state[0].mu)
        return [np.asarray(x, float).ravel() for x in leaves]

    out["leaves"] = [
        {"param_diff": float(np.abs(p1 - p2).max()), "mu_diff": float(np.abs(m1 - m2).max()),
         "mu_scale": float(np.abs(m1).max())}
        for p1, p2, m1, m2 in zip(tree("one", "params"), tree("sharded", "params"),
                                  tree("one", "mu"), tree("sharded", "mu"))]
    out["lr"] = tr.config.lr
    print("RESULT", json.dumps(out))
""")


def test_jax_two_host_devices_equal_one_device(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
                                      "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
    proc = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert out["devices"] == 2
    assert out["one"]["shardings"] == ["single"] and out["sharded"]["shardings"] == ["P()"]
    assert out["sharded"]["n_shards"] == 2  # the batch lies on both devices, 20 rows each
    np.testing.assert_allclose(out["sharded"]["losses"], out["one"]["losses"], rtol=1e-5)
    # Adam's first moment holds the gradients of the whole batch: they agree up to rounding
    leaves = out["leaves"]
    assert len(leaves) > 4
    scale = max(leaf["mu_scale"] for leaf in leaves)
    for leaf in leaves:
        assert leaf["mu_diff"] <= 1e-4 * leaf["mu_scale"] + 1e-6 * scale, leaf
    # so do the parameters, except those whose gradient is rounding noise around 0 (the biases before
    # a batch norm): Adam's first steps move them by about +-lr whatever the gradient's size
    for leaf in leaves:
        if leaf["mu_scale"] > 1e-4 * scale:
            assert leaf["param_diff"] <= 1e-6, leaf
        else:
            assert leaf["param_diff"] <= 2 * 2 * out["lr"], leaf


# ------------------------------------------------------------------------------------- the update
# The test above compares DDP with one process *through the Trainer*, with M2's default clipping
# (clip_norm 5): clipping rescales the gradient, so a loss multiplied by the number of processes
# leaves the update, and Adam's moments, unchanged. Here the update is written out by hand, the
# gradients are compared *before* clipping, and a loss of the wrong scale must fail the comparison.
def bn_delta_pair(config, info, spec=None):
    """The delta pair with batch norm in the decoder: on CPUs each rank normalises its shard with
    the shard's own statistics, so the DDP gradient is the mean of the shards' gradients."""
    from ppl_dgm.models.m2 import M2Model

    p = M2Model(info.x_dim, info.n_classes, z_dim=3, hidden=[8], batch_norm=True)
    return Pair(p, DeltaGuide(info.x_dim, info.n_classes, 3, alpha=1.0))


LR = 1e-2


def update_config(data, clip_norm):
    return resolve(registry.get("m2"), {"dataset": data, "labels": 50, "batch_size": 40,
                                        "labelled_batch_size": 20, "steps_per_epoch": 2,
                                        "epochs": 1, "device": "cpu", "validation_size": 100,
                                        "threads": 1, "clip_norm": clip_norm, "lr": LR}, {})


def _rank_recording(rank, world, port, data, run_dirs, clip_norm, loss_factor):
    """A DDP run (2 steps) that saves rank 0's gradients of every step as ``clip_gradients`` gets
    them (after DDP's all-reduce, before clipping); ``loss_factor`` multiplies the loss of every
    rank (the bug this test must catch: ``world_size`` instead of 1)."""
    from ppl_dgm.training import distributed

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    real_clip, real_forward = loop.clip_gradients, distributed.Objective.forward
    grads = []

    def recording_clip(params, config):
        grads.append([p.grad.detach().clone() for p in params])
        return real_clip(params, config)

    def scaled_forward(self, *args, **kwargs):
        loss, stats = real_forward(self, *args, **kwargs)
        return loss * loss_factor, stats

    loop.clip_gradients = recording_clip
    distributed.Objective.forward = scaled_forward
    trainer = distributed.DistributedTrainer(update_config(data, clip_norm), run_dirs[rank],
                                             progress=False)
    trainer.fit()
    if rank == 0:
        torch.save(grads, run_dirs[0].parent / "ddp_grads.pt")


def reference_update(data, run_dir, clip_norm):
    """Two steps of 2-process data-parallel training written out by hand, without the Trainer's
    step, DDP or torch's optimiser: each shard's gradient (the first half of every global batch,
    then the second, each normalised with its own batch-norm statistics), their mean, the global
    norm clipping, then Adam. The Trainer only supplies the initial parameters, the global batches
    (its seeded generator) and the objective of a shard. Returns the gradients of each step before
    clipping, the parameters and Adam's moments after the two steps."""
    tr = Trainer(update_config(data, clip_norm), run_dir, progress=False)
    cfg = tr.config
    b1, b2 = cfg.adam_betas
    eps = 1e-8  # torch.optim.Adam's default, which the Trainer uses
    params = list(tr.pair.parameters())
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    tr.set_training(True)
    grads_per_step = []
    for t, (idx, idx_l) in enumerate(tr._batches(), start=1):
        total = [torch.zeros_like(p) for p in params]
        for shard in range(2):
            half, half_l = len(idx) // 2, len(idx_l) // 2
            loss, _ = tr.compute_loss(idx[shard * half:(shard + 1) * half],
                                      idx_l[shard * half_l:(shard + 1) * half_l], 1.0)
            shard_grads = torch.autograd.grad(loss, params, allow_unused=True)
            for acc, g in zip(total, shard_grads, strict=True):
                if g is not None:
                    acc += g / 2  # DDP's mean over the 2 ranks
        grads_per_step.append([g.clone() for g in total])
        if clip_norm:
            norm = torch.sqrt(sum((g.double() ** 2).sum() for g in total))
            factor = min(1.0, clip_norm / (float(norm) + 1e-6))
            total = [g * factor for g in total]
        with torch.no_grad():
            for p, g, m_i, v_i in zip(params, total, m, v, strict=True):
                m_i.mul_(b1).add_((1 - b1) * g)
                v_i.mul_(b2).add_((1 - b2) * g * g)
                m_hat, v_hat = m_i / (1 - b1 ** t), v_i / (1 - b2 ** t)
                p.sub_(cfg.lr * m_hat / (v_hat.sqrt() + eps))
    named = {name: p.detach().clone() for name, p in tr.pair.named_parameters()}
    return grads_per_step, named, m, v


def check_against_reference(tmp_path, reference):
    """Raise AssertionError where the DDP run in ``tmp_path`` differs from ``reference``: its
    gradients before clipping (step by step), then its parameters and Adam's moments."""
    grads_ref, params_ref, m_ref, v_ref = reference
    grads_ddp = torch.load(tmp_path / "ddp_grads.pt", weights_only=False)
    assert len(grads_ddp) == len(grads_ref) == 2
    for step, (gd, gr) in enumerate(zip(grads_ddp, grads_ref, strict=True)):
        scale = max(g.abs().max().item() for g in gr)
        for i, (a, b) in enumerate(zip(gd, gr, strict=True)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale,
                                       err_msg=f"gradient {i} of step {step + 1}")
    state = _state(tmp_path / "ddp")
    assert state["step"] == 2
    # the parameters, except those whose gradient is rounding noise around 0 (the biases before a
    # batch norm, which cancels them): Adam moves those by about +-lr a step whatever the noise
    m_scale = max(x.abs().max().item() for x in m_ref)
    for (name, value), m_i in zip(params_ref.items(), m_ref, strict=True):
        noise = m_i.abs().max().item() <= 1e-4 * m_scale
        np.testing.assert_allclose(state["pair"][name], value, rtol=0 if noise else 1e-4,
                                   atol=2 * 2 * LR if noise else 1e-6, err_msg=name)
    adam = state["optimizer"]["state"]
    for key, ref in (("exp_avg", m_ref), ("exp_avg_sq", v_ref)):
        scale = max(x.abs().max().item() for x in ref)
        for i, r in enumerate(ref):
            np.testing.assert_allclose(adam[i][key], r, rtol=1e-3, atol=1e-6 * scale,
                                       err_msg=f"{key} of parameter {i}")


def ddp_run(tmp_path, data, monkeypatch, clip_norm, loss_factor=1.0):
    """The BN delta pair trained 2 steps by 2 gloo processes (forked) into ``tmp_path/ddp``."""
    monkeypatch.setattr(loop, "build_pair", bn_delta_pair)
    run_dirs = [tmp_path / "ddp", tmp_path / "rank1"]
    mp.start_processes(_rank_recording, args=(2, _free_port(), data, run_dirs, clip_norm,
                                              loss_factor), nprocs=2, start_method="fork", join=True)


@pytest.mark.parametrize("clip_norm", [0.0, 5.0], ids=["clipping-off", "clipping-on"])
def test_ddp_update_equals_the_update_written_out(tmp_path, binary_digits, monkeypatch, clip_norm):
    monkeypatch.setattr(loop, "build_pair", bn_delta_pair)
    reference = reference_update(binary_digits, tmp_path / "reference", clip_norm)
    if clip_norm:  # the clip is active: the case where a wrong scale hid from the update
        assert torch.sqrt(sum((g ** 2).sum() for g in reference[0][0])) > clip_norm
    ddp_run(tmp_path / "right", binary_digits, monkeypatch, clip_norm)
    check_against_reference(tmp_path / "right", reference)
    # the loss multiplied by the number of processes: the same comparison must fail
    ddp_run(tmp_path / "wrong", binary_digits, monkeypatch, clip_norm, loss_factor=2.0)
    with pytest.raises(AssertionError, match="gradient"):
        check_against_reference(tmp_path / "wrong", reference)
