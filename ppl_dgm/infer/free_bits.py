"""Free bits (Kingma et al. 2016, "Improving Variational Inference with Inverse
Autoregressive Flow").

An option for the LVAE's hierarchical models, not part of the LVAE paper's recipe (which uses
warm-up alone). Each latent site's KL is held at or above ``free_bits`` nats per data point:

    loss = -E_q[log p(x | .)] + beta * sum_sites max(free_bits, KL_site),

with KL_site the minibatch mean of log q - log p of that site. Below the threshold a site's KL term
has no gradient, so the optimiser has no incentive to switch its units off.

Because it needs the KL *per site*, free bits cannot be expressed as ``poutine.scale`` on the
sites; it is an alternative objective with the signature of
:func:`ppl_dgm.infer.objectives.unsupervised_loss` minus the ELBO object. The hook for the trainer:
when the spec's ``train`` dict has ``free_bits > 0``, call
``free_bits_loss(pair, x, free_bits=..., beta=beta)`` instead of ``unsupervised_loss``.
"""

from __future__ import annotations

import torch

from ppl_dgm.infer.diagnostics import latent_sites, log_ratios_from_traces, traces
from ppl_dgm.pair import Pair


def free_bits_loss(pair: Pair, x: torch.Tensor, *, free_bits: float, beta: float = 1.0,
                   num_samples: int = 1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-[E log p(x | .) - beta * sum_sites max(free_bits, KL_site)] per data point, and a log dict.

    Uses pathwise (reparameterised) gradients, so every guide site must have ``rsample``; with
    ``free_bits = 0`` it is the (annealed) negative ELBO. ``beta`` multiplies the clamped KL terms,
    so warm-up can be combined with it.
    """
    if free_bits < 0:
        raise ValueError(f"free_bits must be >= 0 (got {free_bits})")
    guide_trace, model_trace = traces(pair, x, num_samples)
    for name in latent_sites(guide_trace):
        if not guide_trace.nodes[name]["fn"].has_rsample:
            raise TypeError(f"free bits needs reparameterised guide sites; {name!r} is not")
    kl, log_lik = log_ratios_from_traces(guide_trace, model_trace, num_samples * x.shape[0])
    clamped = sum(torch.clamp(v, min=free_bits) for v in kl.values())
    loss = -log_lik + beta * clamped
    # detached device scalars: the trainer reads them once per epoch
    logs = {"loss": loss.detach().double(), "log_lik": log_lik.detach().double()}
    logs.update({f"kl_{name}": v.detach().double() for name, v in kl.items()})
    return loss, logs
