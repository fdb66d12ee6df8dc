"""Network building blocks: ``torch_blocks`` (Pyro pairs) and ``flax_blocks`` (NumPyro pairs), with
their backend-neutral helpers (``init_rules``, ``reader_shapes``, ``spatial``).

``PAPER_MIN_SCALE``: the LVAE recipe's floor of a Gaussian layer's scale, sqrt(1e-5) (the authors'
variance ``softplus(h) + 1e-5``); the default of both backends' Gaussian layers, used by the VAE/LVAE
and CaGeM pairs (``models/common.py`` re-exports it for them).
"""

PAPER_MIN_SCALE = 1e-5 ** 0.5
