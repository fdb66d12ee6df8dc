"""RNN-SPN, FFN-SPN and a plain CNN reading cluttered MNIST sequences, as NumPyro programs.

The NumPyro/JAX twin of ``models/rnn_spn.py`` (Sønderby, Sønderby, Maaløe, Winther 2015, "Recurrent
Spatial Transformer Networks"): the same discriminative model

    p(y_1..T | x) = prod_t Cat(y_t | softmax(f_t(x)))

whose only site is ``y``, observed, in the plates ``data`` (dim -2) and ``positions`` (dim -1), with
an empty guide, so ``Trace_ELBO`` is the summed cross-entropy (the NumPyro trainer's
:func:`~ppl_dgm.infer.numpyro_objectives.supervised` divides it by the B x T labels).

The networks are flax modules with exactly the architecture and initialisation of the torch ones
(see ``models/rnn_spn.py``): Glorot-uniform conv and dense weights with zero biases (Lasagne),
GRU weights N(0, 0.1^2) with zero biases and torch's gate order (r, z, n) and equations, the affine
head with zero weights and the identity as bias, ``int(side // downsample)`` glimpses sampled by
:mod:`ppl_dgm.nn.spatial_jax` (bilinear, zero padding, ``align_corners=False``). Convolutions run
on NHWC arrays; feature maps are flattened in torch's (C, H, W) order, so a torch state dict maps
onto the flax parameters by transposing the kernels (conv OIHW -> HWIO, dense (out, in) -> (in,
out)). The networks are registered as the program's ``net$params`` site. Importing this module
imports JAX, never torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from flax import linen as nn

from ppl_dgm.nn.flax_blocks import apply, network
from ppl_dgm.nn.reader_shapes import check_padding_mode, glimpse_size, pick, reader_dims
from ppl_dgm.nn.spatial_jax import identity_affine, transform
from ppl_dgm.numpyro_pair import NumPyroPair

__all__ = [
    "CNNReader",
    "FFNSPN",
    "GRU",
    "AffineHead",
    "GlimpseClassifier",
    "LocalisationCNN",
    "RNNSPN",
    "SequenceModel",
    "build_cnn",
    "build_ffn_spn",
    "build_rnn_spn",
    "empty_guide",
    "sequence_errors",
]

glorot = nn.initializers.xavier_uniform()  # fan_in/out include the 3 x 3 receptive field, as torch


def _conv(filters: int, name: str | None = None) -> nn.Conv:
    """A valid 3 x 3 convolution, Glorot-uniform kernel, zero bias (Lasagne's defaults)."""
    return nn.Conv(filters, (3, 3), padding="VALID", kernel_init=glorot, name=name)


def _dense(features: int, name: str | None = None) -> nn.Dense:
    """A dense layer, Glorot-uniform kernel, zero bias (Lasagne's defaults)."""
    return nn.Dense(features, kernel_init=glorot, name=name)


def _pool(h: jax.Array) -> jax.Array:
    """2 x 2 max-pooling with stride 2, odd borders dropped (``torch.nn.MaxPool2d(2)``)."""
    return nn.max_pool(h, (2, 2), strides=(2, 2), padding="VALID")


def _flatten_chw(h: jax.Array) -> jax.Array:
    """``(B, H, W, C)`` -> ``(B, C * H * W)`` in torch's (C, H, W) order."""
    return jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)


def _conv_side(side: int, convs: int) -> int:
    """Side after ``convs`` valid 3x3 convolutions with a 2x2 max-pool between consecutive ones."""
    for i in range(convs):
        side = side - 2
        if i < convs - 1:
            side = side // 2
    if side < 1:
        raise ValueError("input too small for the CNN")
    return side


def _as_images(x: jax.Array, side: int) -> jax.Array:
    """``(B, side, side)``, ``(B, 1, side, side)`` or flat ``(B, side**2)`` -> ``(B, H, W)``."""
    if x.ndim == 2:
        return x.reshape(x.shape[0], side, side)
    if x.ndim == 3:
        return x
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    raise ValueError(f"expected canvases of shape (B, H, W), (B, 1, H, W) or (B, D); got {x.shape}")


class LocalisationCNN(nn.Module):
    """max-pool 2, then three [conv 3x3 / ``filters``, ReLU] with max-pool 2 between them, flat.

    Takes ``(B, H, W)`` canvases; on 100 x 100: 50 -> 48 -> 24 -> 22 -> 11 -> 9, 1620 features.
    """

    filters: int = 20

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        h = _pool(images[..., None])
        for i in range(3):
            h = nn.relu(_conv(self.filters, name=f"conv_{i}")(h))
            if i < 2:
                h = _pool(h)
        return _flatten_chw(h)


class GlimpseClassifier(nn.Module):
    """Three [conv 3x3 / ``filters``, ReLU] with max-pool 2 between them, dense ``dense`` (ReLU),
    then a linear layer of ``n_out`` logits. Takes ``(N, size, size)`` glimpses."""

    n_out: int
    filters: int = 32
    dense: int = 400

    @nn.compact
    def __call__(self, glimpses: jax.Array) -> jax.Array:
        h = glimpses[..., None]
        for i in range(3):
            h = nn.relu(_conv(self.filters, name=f"conv_{i}")(h))
            if i < 2:
                h = _pool(h)
        h = nn.relu(_dense(self.dense, name="hidden")(_flatten_chw(h)))
        return _dense(self.n_out, name="logits")(h)


class GRU(nn.Module):
    """torch's ``nn.GRU`` (one layer, h_0 = 0) over a sequence ``(B, T, D)`` -> ``(B, T, units)``.

    Gates in torch's order and equations: r = s(W_ir x + b_ir + W_hr h + b_hr), z likewise,
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h. Parameters ``w_i (D, 3U)``,
    ``w_h (U, 3U)``, ``b_i``, ``b_h (3U)`` are torch's ``weight_ih_l0.T``, ``weight_hh_l0.T``,
    ``bias_ih_l0``, ``bias_hh_l0``; weights start N(0, 0.1^2), biases 0 (Lasagne's GRULayer).
    """

    units: int

    @nn.compact
    def __call__(self, xs: jax.Array) -> jax.Array:
        u = self.units
        normal = nn.initializers.normal(0.1)
        w_i = self.param("w_i", normal, (xs.shape[-1], 3 * u))
        w_h = self.param("w_h", normal, (u, 3 * u))
        b_i = self.param("b_i", nn.initializers.zeros, (3 * u,))
        b_h = self.param("b_h", nn.initializers.zeros, (3 * u,))
        gi = xs @ w_i + b_i  # (B, T, 3U)
        h = jnp.zeros((xs.shape[0], u), xs.dtype)
        outputs = []
        for t in range(xs.shape[1]):  # T is small (the number of digits): unrolled
            gh = h @ w_h + b_h
            r = jax.nn.sigmoid(gi[:, t, :u] + gh[:, :u])
            z = jax.nn.sigmoid(gi[:, t, u:2 * u] + gh[:, u:2 * u])
            n = jnp.tanh(gi[:, t, 2 * u:] + r * gh[:, 2 * u:])
            h = (1.0 - z) * n + z * h
            outputs.append(h)
        return jnp.stack(outputs, axis=1)


class AffineHead(nn.Module):
    """Dense map to the 6 affine parameters, zero weights and the identity ``[1, 0, 0, 0, 1, 0]`` as
    bias (the authors' ``A_net``): every glimpse starts as the down-sampled whole input.
    Returns ``(..., 2, 3)``."""

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        def bias(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
            return identity_affine(1, dtype).reshape(shape)

        out = nn.Dense(6, kernel_init=nn.initializers.zeros, bias_init=bias, name="linear")(h)
        return out.reshape(*h.shape[:-1], 2, 3)


class _Reader(nn.Module):
    """Common methods: ``transforms`` ``(B, K, 2, 3)``, ``glimpses`` and ``__call__`` (logits
    ``(B, T, n_classes)``). Subclasses set ``side``, ``n_steps``, ``n_classes``, ``downsample``."""

    side: int
    n_steps: int
    n_classes: int
    downsample: float
    # the glimpse sampler (ppl_dgm.nn.spatial_jax.transform); the authors': True and "border"
    align_corners: bool = False
    padding_mode: str = "zeros"

    @property
    def size(self) -> int:
        """The glimpse side, ``int(side // downsample)``."""
        return glimpse_size(self.side, self.downsample)

    def transforms(self, images: jax.Array) -> jax.Array:
        raise NotImplementedError

    def glimpses(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The affine transforms ``(B, K, 2, 3)`` and the glimpses ``(B, K, size, size)``."""
        images = _as_images(x, self.side)
        theta = self.transforms(images)
        b, k = theta.shape[:2]
        repeated = jnp.broadcast_to(images[:, None, None], (b, k, 1, *images.shape[1:]))
        g = transform(repeated.reshape(b * k, 1, *images.shape[1:]), theta.reshape(b * k, 2, 3),
                      self.size, align_corners=self.align_corners, padding_mode=self.padding_mode)
        return theta, g.reshape(b, k, self.size, self.size)


class RNNSPN(_Reader):
    """Localisation CNN -> GRU(``rnn_units``) for T steps -> affine ``A_t`` (identity at init) ->
    glimpse ``t`` -> a CNN classifier shared over the steps -> logits ``(B, T, n_classes)``."""

    side: int = 100
    n_steps: int = 3
    n_classes: int = 10
    downsample: float = 3.0
    loc_filters: int = 20
    rnn_units: int = 256
    filters: int = 32
    dense: int = 400

    def setup(self) -> None:
        _conv_side(self.side // 2, 3)  # raises for a canvas too small for the networks
        _conv_side(self.size, 3)
        self.loc = LocalisationCNN(self.loc_filters)
        self.rnn = GRU(self.rnn_units)
        self.affine = AffineHead()
        self.classifier = GlimpseClassifier(self.n_classes, self.filters, self.dense)

    def transforms(self, images: jax.Array) -> jax.Array:
        features = self.loc(images)  # the same input at every step (the authors' Repeat layer)
        repeated = jnp.broadcast_to(features[:, None], (features.shape[0], self.n_steps,
                                                       features.shape[-1]))
        return self.affine(self.rnn(repeated))  # (B, T, 2, 3)

    def __call__(self, x: jax.Array) -> jax.Array:
        _, g = self.glimpses(x)
        b, t = g.shape[:2]
        return self.classifier(g.reshape(b * t, self.size, self.size)).reshape(b, t, -1)


class FFNSPN(_Reader):
    """Localisation CNN -> dense ``loc_dense`` -> one affine transform (identity at init) -> one
    glimpse -> CNN -> dense -> T softmax heads -> logits ``(B, T, n_classes)``."""

    side: int = 100
    n_steps: int = 3
    n_classes: int = 10
    downsample: float = 2.0
    loc_filters: int = 20
    loc_dense: int = 200
    filters: int = 96
    dense: int = 400

    def setup(self) -> None:
        _conv_side(self.side // 2, 3)
        _conv_side(self.size, 3)
        self.loc = LocalisationCNN(self.loc_filters)
        self.loc_hidden = _dense(self.loc_dense)
        self.affine = AffineHead()
        # T heads of n_classes on the shared dense layer == one linear layer of T * n_classes.
        self.classifier = GlimpseClassifier(self.n_steps * self.n_classes, self.filters, self.dense)

    def transforms(self, images: jax.Array) -> jax.Array:
        return self.affine(nn.relu(self.loc_hidden(self.loc(images))))[:, None]  # (B, 1, 2, 3)

    def __call__(self, x: jax.Array) -> jax.Array:
        _, g = self.glimpses(x)
        return self.classifier(g[:, 0]).reshape(g.shape[0], self.n_steps, self.n_classes)


class CNNReader(_Reader):
    """The plain CNN baseline: the canvas down-sampled by the fixed identity transform (no
    localisation network), then the FFN-SPN's classifier and T heads."""

    side: int = 100
    n_steps: int = 3
    n_classes: int = 10
    downsample: float = 2.0
    filters: int = 96
    dense: int = 400

    def setup(self) -> None:
        _conv_side(self.size, 3)
        self.classifier = GlimpseClassifier(self.n_steps * self.n_classes, self.filters, self.dense)

    def transforms(self, images: jax.Array) -> jax.Array:
        return identity_affine(images.shape[0], images.dtype)[:, None]  # (B, 1, 2, 3)

    def __call__(self, x: jax.Array) -> jax.Array:
        _, g = self.glimpses(x)
        return self.classifier(g[:, 0]).reshape(g.shape[0], self.n_steps, self.n_classes)


class SequenceModel:
    """The NumPyro model ``p(y_1..T | x) = prod_t Cat(y_t | softmax(f_t(x)))``.

    ``y`` ``(B, T)`` is one observed site in the plates ``data`` (dim -2) and ``positions``
    (dim -1); with ``y=None`` the labels are sampled. ``beta`` and ``train`` are accepted for the
    common signature and unused (no latent variable, no batch normalisation).
    """

    def __init__(self, net: _Reader) -> None:
        self.net = net

    def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
                 beta: float | jax.Array = 1.0, train: bool = True) -> jax.Array:
        net = network("net", self.net, jnp.zeros((1, self.net.side, self.net.side), x.dtype))
        logits = net(x)
        b, t = logits.shape[:2]
        with numpyro.plate("data", b, dim=-2), numpyro.plate("positions", t, dim=-1):
            return numpyro.sample("y", dist.Categorical(logits=logits), obs=y)

    def logits(self, params: dict[str, Any], x: jax.Array) -> jax.Array:
        """The network's logits ``(B, T, n_classes)`` for the program's parameters ``params``."""
        return apply(self.net, params, "net", x)

    def classify(self, params: dict[str, Any], x: jax.Array) -> jax.Array:
        """Class probabilities ``(B, T, n_classes)`` (deterministic)."""
        return jax.nn.softmax(self.logits(params, x), axis=-1)

    def glimpses(self, params: dict[str, Any], x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(theta (B, K, 2, 3), glimpses (B, K, size, size))`` for the parameters ``params``."""
        return apply(self.net, params, "net", x, method=type(self.net).glimpses)


def empty_guide(x: jax.Array, y: jax.Array | None = None, *, beta: float | jax.Array = 1.0,
                train: bool = True) -> None:
    """The guide of a model without latent variables: samples nothing."""
    return None


def sequence_errors(probs: jax.Array, y: jax.Array) -> dict[str, float]:
    """Single-digit error (over all B x T digits) and whole-sequence error (any digit wrong)."""
    wrong = jnp.argmax(probs, -1) != y
    return {"digit_error": float(wrong.mean()), "sequence_error": float(wrong.any(-1).mean())}


def _pair(net: _Reader) -> NumPyroPair:
    model = SequenceModel(net)
    return NumPyroPair(model, empty_guide, max_plate_nesting=2, classifier=model.classify)


def _sampler(hparams: dict[str, Any]) -> dict[str, Any]:
    """The glimpse sampler's conventions from ``hparams`` (``align_corners``, ``padding_mode``)."""
    return {"align_corners": bool(hparams.get("align_corners", False)),
            "padding_mode": check_padding_mode(hparams.get("padding_mode", "zeros"))}


def build_rnn_spn(hparams: dict[str, Any], data: Any) -> NumPyroPair:
    """RNN-SPN pair; hparams ``downsample`` (3), ``loc_filters`` (20), ``rnn_units`` (256),
    ``filters`` (32), ``dense`` (400)."""
    keys = ("downsample", "loc_filters", "rnn_units", "filters", "dense")
    return _pair(RNNSPN(**reader_dims(hparams, data), **pick(hparams, keys), **_sampler(hparams)))


def build_ffn_spn(hparams: dict[str, Any], data: Any) -> NumPyroPair:
    """FFN-SPN pair; hparams ``downsample`` (2), ``loc_filters`` (20), ``loc_dense`` (200),
    ``filters`` (96), ``dense`` (400)."""
    keys = ("downsample", "loc_filters", "loc_dense", "filters", "dense")
    return _pair(FFNSPN(**reader_dims(hparams, data), **pick(hparams, keys), **_sampler(hparams)))


def build_cnn(hparams: dict[str, Any], data: Any) -> NumPyroPair:
    """Plain CNN pair; hparams ``downsample`` (2), ``filters`` (96), ``dense`` (400)."""
    return _pair(CNNReader(**reader_dims(hparams, data),
                           **pick(hparams, ("downsample", "filters", "dense")), **_sampler(hparams)))
