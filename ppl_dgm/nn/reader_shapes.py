"""Backend-neutral sizes of the sequence readers (RNN-SPN family): imports neither torch nor JAX.

Both ``models/rnn_spn.py`` (Pyro) and ``models/rnn_spn_numpyro.py`` (NumPyro) size their glimpses
and networks through these functions.
"""

from __future__ import annotations

import math
from typing import Any


def glimpse_size(side: int, downsample: float) -> int:
    """Side of a glimpse taken from an input ``side`` pixels wide with down-sampling ``downsample``.

    ``int(side // downsample)``, the convention of Lasagne's ``TransformerLayer``.
    """
    if downsample <= 0:
        raise ValueError(f"downsample must be positive, got {downsample}")
    size = int(side // downsample)
    if size < 1:
        raise ValueError(f"downsample {downsample} leaves no pixel of a side of {side}")
    return size


def reader_dims(hparams: dict[str, Any], data: Any) -> dict[str, int]:
    """Canvas side, number of positions T and number of classes from the trainer's ``DataInfo``
    (``image_shape``, ``sequence_length``, ``n_classes``); hparams ``side``, ``n_steps`` and
    ``n_classes`` stand in where ``data`` lacks them."""
    shape = getattr(data, "image_shape", None)
    if shape:
        side = int(shape[-1])
    elif getattr(data, "x_dim", None):
        side = math.isqrt(int(data.x_dim))
    else:
        side = int(hparams.get("side", 100))
    n_steps = getattr(data, "sequence_length", None) or hparams.get("n_steps", 3)
    n_classes = getattr(data, "n_classes", None) or hparams.get("n_classes", 10)
    return {"side": side, "n_steps": int(n_steps), "n_classes": int(n_classes)}


def pick(hparams: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The entries of ``hparams`` named in ``keys`` (those present)."""
    return {k: hparams[k] for k in keys if k in hparams}


PADDING_MODES = ("zeros", "border")


def check_padding_mode(value: Any) -> str:
    """The glimpse sampler's padding (``--set padding_mode=...``): ``zeros`` or ``border``."""
    if value not in PADDING_MODES:
        from ppl_dgm.errors import UserError

        raise UserError(f"--set padding_mode={value}: unknown padding mode",
                        f"use one of {list(PADDING_MODES)} (border: the authors' sampler)")
    return value
