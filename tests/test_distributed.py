"""Data-parallel training: DDP over 2 gloo processes and JAX sharding over 2 host devices give the
update of one process with the whole batch."""

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
from ppl_dgm.train import loop
from ppl_dgm.train.loop import Trainer


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


def delta_pair(config, info):
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
    from ppl_dgm.train.distributed import DistributedTrainer

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
    from ppl_dgm.train import distributed

    monkeypatch.setattr(distributed, "init_process_group", lambda device: (0, 3, 0))
    with pytest.raises(ValueError, match="does not split into 3 equal shards"):
        distributed.DistributedTrainer(config("digits", 1), tmp_path / "r", progress=False)


JAX_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from ppl_dgm import registry
    from ppl_dgm.config import resolve
    from ppl_dgm.train.numpyro_loop import NumPyroTrainer
    from ppl_dgm.train.numpyro_sharded import _INDEX_ARGS, ShardedNumPyroTrainer

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
