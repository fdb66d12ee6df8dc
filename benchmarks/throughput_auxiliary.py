"""ADGM/SDGM step time: the Pyro pair next to a plain PyTorch loss of the same networks.

One optimiser step on 100 labelled + 100 unlabelled MNIST-sized points with the paper's
networks (two hidden layers of 500 units everywhere, a and z of 100 dimensions, batch norm) and the
registered number of Monte Carlo samples (ADGM 1, SDGM 5, vectorised). The reference computes the
same bounds by hand -- the labels enumerated by broadcasting a one-hot identity, ``a`` sampled once
per data point and particle, q(y|a,x) averaged over the particles before weighing the per-label
bounds (the registered ``average_y_over_particles``) -- with the pair's own networks, so both sides
do the same arithmetic and the ratio measures what Pyro adds. Used by
``benchmarks/throughput.py --model adgm`` (and ``--model sdgm``).
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import Any

import torch
from pyro.infer import TraceEnum_ELBO
from torch.distributions import Normal
from torch.nn import functional as F

from ppl_dgm import registry
from ppl_dgm.infer.objectives import semi_supervised_loss
from ppl_dgm.pair import Pair

MODELS = ("adgm", "sdgm")


def _log_normal(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return Normal(loc, scale).log_prob(value).sum(-1)


def _sample(loc: torch.Tensor, scale: torch.Tensor, shape: tuple[int, ...] = ()) -> torch.Tensor:
    return loc + scale * torch.randn(shape + torch.broadcast_shapes(loc.shape, scale.shape),
                                     device=loc.device)


def _log_joint_minus_qz(name: str, pair: Pair, x, a, y, z, loc_z, scale_z) -> torch.Tensor:
    """log p(x|.) + log p(y) + log p(z) + log p(a|.) - log q(z|a,y,x), broadcast over labels."""
    p = pair.p
    n_classes = y.shape[-1]
    log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
    if name == "adgm":
        logits = p.x_logits(p.x_net(z, y))
        loc_a, scale_a = p.a_head(p.a_net(x, y, z))
    else:
        loc_a, scale_a = p.a_head(p.a_net(z, y))
        logits = p.x_logits(p.x_net(a, z, y))
    log_px = -F.binary_cross_entropy_with_logits(
        logits, x.expand_as(logits), reduction="none").sum(-1)
    return (log_px - math.log(n_classes) + log_pz + _log_normal(a, loc_a, scale_a)
            - _log_normal(z, loc_z, scale_z))


def reference_loss(name: str, pair: Pair, x_l: torch.Tensor, y_l: torch.Tensor,
                   x_u: torch.Tensor, num_particles: int = 1) -> torch.Tensor:
    """mean_labelled[-L(x,y) - alpha log q(y|a,x)] + mean_unlabelled[-U(x)], written by hand."""
    q, S = pair.q, num_particles
    n_classes = q.n_classes

    # labelled: one a and one z per particle
    loc_a, scale_a = q.q_a(x_l)
    a = _sample(loc_a, scale_a, (S,))                                     # (S, B, A)
    y = F.one_hot(y_l, n_classes).to(x_l.dtype)
    loc_z, scale_z = q.q_z(x_l, a, y)
    z = _sample(loc_z, scale_z)
    bound = _log_joint_minus_qz(name, pair, x_l, a, y, z, loc_z, scale_z) \
        - _log_normal(a, loc_a, scale_a)
    log_qy = torch.log_softmax(q.q_y_logits(x_l, a), -1).gather(
        -1, y_l.expand(S, -1)[..., None])[..., 0]
    loss_l = -(bound + q.alpha * log_qy).mean(0).sum() / x_l.shape[0]

    # unlabelled: a once per point and particle, then every label by broadcasting
    loc_a, scale_a = q.q_a(x_u)
    a = _sample(loc_a, scale_a, (S,))                                     # (S, B, A)
    log_qy = torch.log_softmax(q.q_y_logits(x_u, a), -1)                  # (S, B, K)
    if S > 1 and q.average_y_over_particles:
        log_qy = torch.logsumexp(log_qy, 0, keepdim=True) - math.log(S)
    log_qy = log_qy.permute(2, 0, 1)                                      # (K, S|1, B)
    y = torch.eye(n_classes, dtype=x_u.dtype, device=x_u.device).reshape(n_classes, 1, 1, -1)
    loc_z, scale_z = q.q_z(x_u, a, y)                                     # (K, S, B, Z)
    z = _sample(loc_z, scale_z)
    inner = _log_joint_minus_qz(name, pair, x_u, a, y, z, loc_z, scale_z) - log_qy
    bound = (log_qy.exp() * inner).sum(0) - _log_normal(a, loc_a, scale_a)
    loss_u = -bound.mean(0).sum() / x_u.shape[0]
    return loss_l + loss_u


def build_paper_pair(name: str, device: torch.device, alpha: float = 50.0) -> Pair:
    spec = registry.get(name)
    hparams = {**spec.hparams, "alpha": alpha}
    return spec.builder()(hparams, SimpleNamespace(x_dim=784, n_classes=10)).to(device)


def time_steps(name: str, steps: int = 20, warmup: int = 3, num_particles: int | None = None,
               device: str = "cpu", batch: int = 100, seed: int = 0) -> dict[str, Any]:
    """Median seconds per optimiser step, Pyro and the hand-written reference, interleaved."""
    dev = torch.device(device)
    torch.manual_seed(seed)
    spec = registry.get(name)
    S = num_particles or spec.train.get("num_particles", 1)
    pair = build_paper_pair(name, dev)
    elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=S, vectorize_particles=S > 1)
    opt = torch.optim.Adam(pair.parameters(), lr=3e-4)
    x_l = torch.bernoulli(torch.rand(batch, 784, device=dev))
    y_l = torch.randint(10, (batch,), device=dev)
    x_u = torch.bernoulli(torch.rand(batch, 784, device=dev))

    def pyro_loss():
        return semi_supervised_loss(pair, elbo, x_l, y_l, x_u)[0]

    def torch_loss():
        return reference_loss(name, pair, x_l, y_l, x_u, S)

    def step(loss_fn) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pair.parameters(), 5.0)
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    times: dict[str, list[float]] = {"pyro": [], "torch_reference": []}
    for i in range(warmup + steps):
        t_pyro, t_torch = step(pyro_loss), step(torch_loss)
        if i >= warmup:
            times["pyro"].append(t_pyro)
            times["torch_reference"].append(t_torch)
    median = {k: float(torch.tensor(v).median()) for k, v in times.items()}
    return {"model": name, "num_particles": S, "labelled_batch": batch, "unlabelled_batch": batch,
            "step_seconds": median, "ratio": median["pyro"] / median["torch_reference"]}


def check_reference(name: str, num_particles: int = 1) -> float:
    """|Pyro loss - reference loss| at the same noise (both draw torch.randn in the same order).

    Only a sanity check of the benchmark's arithmetic; the real checks are tests/test_adgm.py.
    """
    pair = build_paper_pair(name, torch.device("cpu"))
    elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=num_particles,
                          vectorize_particles=num_particles > 1)
    x = torch.bernoulli(torch.rand(8, 784))
    y = torch.randint(10, (8,))
    losses = []
    for fn in (lambda: semi_supervised_loss(pair, elbo, x, y, x)[0],
               lambda: reference_loss(name, pair, x, y, x, num_particles)):
        torch.manual_seed(0)
        losses.append(fn().item())
    return abs(losses[0] - losses[1])


def auxiliary_benchmark(name: str, device: torch.device, steps: int = 20) -> dict[str, float]:
    """``step_seconds`` for ``benchmarks/throughput.py``: {"pyro": .., "torch_reference": ..}."""
    return time_steps(name, steps=steps, device=str(device))["step_seconds"]
