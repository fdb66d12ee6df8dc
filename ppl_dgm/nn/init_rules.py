"""The ADGM/SDGM authors' initialisation rules, shared by both backends' blocks (no torch, no JAX).

``weight_init="glorot"`` (Lasagne's ``GlorotNormal(gain)`` as the authors use it): hidden layers
Glorot-normal with the ReLU gain sqrt(2) (for ``relu``, ``leaky_relu``, ``softplus``, ``elu``; gain 1
otherwise), output layers (logits) with gain 1, the mean and log-variance layers of Gaussian heads
and every bias N(0, SMALL_STD^2). ``"torch"``: PyTorch's default (U(+-1/sqrt(fan_in))).
"""

from __future__ import annotations

import math

WEIGHT_INITS = ("torch", "glorot")
SMALL_STD = 1e-3
_RELU_GAIN = ("relu", "leaky_relu", "softplus", "elu")


def check_weight_init(scheme: str) -> str:
    if scheme not in WEIGHT_INITS:
        raise ValueError(f"weight_init must be one of {WEIGHT_INITS} (got {scheme!r})")
    return scheme


def hidden_gain(activation: str) -> float:
    """Glorot's gain for a hidden layer followed by ``activation``."""
    return math.sqrt(2.0) if activation in _RELU_GAIN else 1.0
