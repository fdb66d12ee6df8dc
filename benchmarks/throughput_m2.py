"""M2's step written by hand in plain PyTorch: the references the Pyro step is timed against.

One step's loss on labelled and unlabelled MNIST-sized points (x of 784 dimensions, 10 classes), the
unlabelled labels enumerated: :func:`concat_reference` concatenates [x, y] and repeats x once per
label (the usual way to write M2, networks of its own: :class:`ConcatM2`), :func:`sum_reference`
uses the pair's own per-input projections with the labels broadcast (the same arithmetic as the
Pyro pair, so the ratio measures what Pyro adds). Used by ``benchmarks/throughput.py --model m2``
and by ``benchmarks/throughput_models.py`` (its ``torch`` column for M2); the ADGM/SDGM references
are ``benchmarks/throughput_auxiliary.py``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Normal
from torch.nn import functional as F

from ppl_dgm.nn.torch_blocks import activation

X_DIM, N_CLASSES = 784, 10


class ConcatM2(nn.Module):
    """M2 networks that take the concatenation [x, one_hot(y)] (x repeated per label)."""

    def __init__(self, hidden: list[int], z_dim: int, act: str) -> None:
        super().__init__()

        def mlp(d_in: int, d_out: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            for h in hidden:
                layers += [nn.Linear(d_in, h), nn.BatchNorm1d(h), activation(act)]
                d_in = h
            return nn.Sequential(*layers, nn.Linear(d_in, d_out))

        self.classifier = mlp(X_DIM, N_CLASSES)
        self.encoder = mlp(X_DIM + N_CLASSES, 2 * z_dim)
        self.decoder = mlp(z_dim + N_CLASSES, X_DIM)


def _bound(encode, decode, x, y_onehot):
    """log p(x|y,z) + log p(y) + log p(z) - log q(z|x,y) for one z sample, per row."""
    loc, scale = encode(x, y_onehot)
    z = loc + scale * torch.randn_like(loc)
    logits = decode(z, y_onehot)
    log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                                 reduction="none").sum(-1)
    log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
    return log_px - math.log(N_CLASSES) + log_pz - Normal(loc, scale).log_prob(z).sum(-1)


def _m2_loss(classify, encode, decode, x_l, y_l, x_u, alpha):
    log_q_l = torch.log_softmax(classify(x_l), -1)
    labelled = _bound(encode, decode, x_l, F.one_hot(y_l, N_CLASSES).float())
    labelled = labelled + alpha * log_q_l.gather(-1, y_l[:, None]).squeeze(-1)
    log_q_u = torch.log_softmax(classify(x_u), -1)
    return -labelled.mean() - _unlabelled(encode, decode, x_u, log_q_u).mean()


def _unlabelled(encode, decode, x_u, log_q_u):
    eye = torch.eye(N_CLASSES, device=x_u.device)
    if getattr(encode, "repeats", False):  # concatenate-and-repeat: (10 * B) rows
        x_rep = x_u.repeat(N_CLASSES, 1)
        y_rep = eye.repeat_interleave(len(x_u), 0)
        bounds = _bound(encode, decode, x_rep, y_rep).reshape(N_CLASSES, len(x_u)).T
    else:  # broadcasting: y of shape (10, 1, 10) against x of shape (B, D)
        bounds = _bound(encode, decode, x_u, eye[:, None, :]).T
    q = log_q_u.exp()
    return (q * bounds).sum(-1) - (q * log_q_u).sum(-1)


def concat_reference(net: ConcatM2, alpha: float):
    def encode(x, y):
        x, y = torch.broadcast_tensors(x, y[..., :1].expand(*y.shape[:-1], 1))[0], y
        h = net.encoder(torch.cat([x, y], -1))
        loc, logvar = h.chunk(2, -1)
        return loc, torch.exp(0.5 * logvar)

    encode.repeats = True

    def decode(z, y):
        return net.decoder(torch.cat([z, y.expand(*z.shape[:-1], N_CLASSES)], -1))

    return lambda x_l, y_l, x_u: _m2_loss(net.classifier, encode, decode, x_l, y_l, x_u, alpha)


def sum_reference(pair, alpha: float):
    q, p = pair.q, pair.p

    def encode(x, y):
        return q.z_head(q.encoder(x, y))

    def decode(z, y):
        return p.x_logits(p.decoder(z, y))

    return lambda x_l, y_l, x_u: _m2_loss(q.classifier, encode, decode, x_l, y_l, x_u, alpha)
