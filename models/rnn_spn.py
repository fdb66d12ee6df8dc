"""RNN-SPN, FFN-SPN and a plain CNN reading cluttered MNIST sequences, as Pyro programs.

Sønderby, Sønderby, Maaløe, Winther (2015), "Recurrent Spatial Transformer Networks". A
discriminative model of the digit sequence ``y_1..T`` on a canvas ``x``:

    p(y_1..T | x) = prod_t Cat(y_t | softmax(f_t(x)))

written as a Pyro program whose only site is ``y``, observed, inside the plates ``data``
(dim -2) and ``positions`` (dim -1). Its guide is empty (no latent variable), so ``Trace_ELBO``
reduces to the negative log-likelihood, i.e. the summed cross-entropy, and the SVI machinery of the
other models trains it unchanged (``supervised_loss`` divides by the B x T labels: the paper's
cross-entropy averaged over the digits).

Networks (the authors' Lasagne code, ``skaae/recurrent-spatial-transformer-code``):

- RNN-SPN: localisation CNN (max-pool 2, then three [conv 3x3 / 20, ReLU] with max-pool 2
  between them) -> the same features fed to a GRU of 256 units at each of the T steps -> a linear
  layer gives the 6 affine parameters ``A_t`` (weights 0, bias = identity) -> a spatial
  transformer samples a glimpse ``int(100 // d)`` pixels wide (down-sampling ``d = 3``: 33 x 33)
  from the canvas -> a CNN classifier shared by the steps (three conv 3x3 / 32 with max-pool 2
  between them, dense 400, softmax 10) labels each glimpse.
- FFN-SPN: the localisation CNN -> dense 200 -> one affine transform -> one glimpse (``d = 2``:
  50 x 50) -> a wider CNN (three conv 3x3 / 96, dense 400) -> T separate softmax heads.
- CNN (reconstructed: the paper gives no architecture): the FFN-SPN without its localisation
  network, i.e. the same classifier and heads on the canvas down-sampled by a fixed identity
  transform (``d = 2``, a 2 x 2 average), so the comparison isolates the transformer.

Lasagne's defaults are kept: ReLU after every conv and hidden dense layer, Glorot-uniform weights
and zero biases, GRU weights drawn from N(0, 0.1^2) with zero biases (``lasagne.layers.GRULayer``;
it shortens the initial plateau where all T glimpses are the same whole canvas). The sampling
convention is described in :mod:`ppl_dgm.nn.spatial`.

Training (registry defaults): RMSprop, lr 5e-4, batch 100, gradient norm clipped at 5, with
Lasagne's RMSprop constants (rho 0.9, epsilon 1e-6 inside the square root, i.e. torch ``alpha=0.9,
eps=1e-3``). With torch's defaults (0.99, 1e-8) parameters with tiny gradients take full-size
steps while the T identical glimpses give the classifier little signal: the affine parameters
random-walk until the glimpses leave the canvas, where ``grid_sample`` (zero padding) has no
gradient, and the model stays at chance (measured: ``benchmarks/results/rnn_spn``).
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppl_dgm.nn.reader_shapes import check_padding_mode, glimpse_size, pick, reader_dims
from ppl_dgm.nn.spatial import AffineHead, identity_affine, transform
from ppl_dgm.pair import Pair

__all__ = [
    "CNNReader",
    "EmptyGuide",
    "FFNSPN",
    "GlimpseClassifier",
    "LocalisationCNN",
    "RNNSPN",
    "SequenceModel",
    "SequencePair",
    "build_cnn",
    "build_ffn_spn",
    "build_rnn_spn",
    "sequence_errors",
]


def _glorot(module: nn.Module) -> None:
    """Lasagne's defaults: Glorot-uniform weights and zero biases for conv and dense layers."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, AffineHead):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _as_images(x: torch.Tensor, side: int) -> torch.Tensor:
    """``(B, side, side)``, ``(B, 1, side, side)`` or flat ``(B, side**2)`` -> ``(B, 1, H, W)``."""
    if x.dim() == 2:
        return x.reshape(x.shape[0], 1, side, side)
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 4:
        return x
    raise ValueError(f"expected canvases of shape (B, H, W), (B, 1, H, W) or (B, D); got {x.shape}")


def _conv_side(side: int, convs: int) -> int:
    """Side after ``convs`` valid 3x3 convolutions with a 2x2 max-pool between consecutive ones."""
    for i in range(convs):
        side = side - 2
        if i < convs - 1:
            side = side // 2
    if side < 1:
        raise ValueError("input too small for the CNN")
    return side


class LocalisationCNN(nn.Module):
    """max-pool 2, then three [conv 3x3 / ``filters``, ReLU] with max-pool 2 between them, flat.

    On a 100 x 100 canvas: 50 -> 48 -> 24 -> 22 -> 11 -> 9, i.e. 20 x 9 x 9 = 1620 features.
    """

    def __init__(self, side: int, filters: int = 20) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.MaxPool2d(2),
            nn.Conv2d(1, filters, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(filters, filters, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(filters, filters, 3), nn.ReLU(),
            nn.Flatten(),
        )
        self.out_dim = filters * _conv_side(side // 2, 3) ** 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class GlimpseClassifier(nn.Module):
    """Three [conv 3x3 / ``filters``, ReLU] with max-pool 2 between them, dense ``dense`` (ReLU),
    then a linear layer of ``n_out`` logits."""

    def __init__(self, side: int, n_out: int, filters: int = 32, dense: int = 400) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, filters, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(filters, filters, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(filters, filters, 3), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(filters * _conv_side(side, 3) ** 2, dense), nn.ReLU(),
            nn.Linear(dense, n_out),
        )

    def forward(self, glimpses: torch.Tensor) -> torch.Tensor:
        return self.net(glimpses)


class _Reader(nn.Module):
    """Common interface: ``transforms``, ``glimpses`` and ``forward`` (logits ``(B, T, classes)``).

    Subclasses set ``side`` (canvas), ``n_steps`` (T), ``n_classes`` and ``size`` (glimpse side).
    """

    side: int
    n_steps: int
    n_classes: int
    size: int
    # the glimpse sampler (ppl_dgm.nn.spatial.transform); the authors': True and "border"
    align_corners: bool = False
    padding_mode: str = "zeros"

    def transforms(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def glimpses(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The affine transforms ``(B, K, 2, 3)`` and the glimpses ``(B, K, size, size)``."""
        images = _as_images(x, self.side)
        theta = self.transforms(images)
        b, k = theta.shape[:2]
        repeated = images.unsqueeze(1).expand(b, k, *images.shape[1:]).reshape(b * k,
                                                                                *images.shape[1:])
        g = transform(repeated, theta.reshape(b * k, 2, 3), self.size,
                      align_corners=self.align_corners, padding_mode=self.padding_mode)
        return theta, g.reshape(b, k, self.size, self.size)


class RNNSPN(_Reader):
    """Localisation CNN -> GRU(``rnn_units``) for T steps -> affine ``A_t`` (identity at init) ->
    glimpse ``t`` -> a CNN classifier shared over the steps -> logits ``(B, T, n_classes)``."""

    def __init__(
        self,
        side: int = 100,
        n_steps: int = 3,
        n_classes: int = 10,
        downsample: float = 3.0,
        loc_filters: int = 20,
        rnn_units: int = 256,
        filters: int = 32,
        dense: int = 400,
    ) -> None:
        super().__init__()
        self.side, self.n_steps, self.n_classes = side, n_steps, n_classes
        self.size = glimpse_size(side, downsample)
        self.loc = LocalisationCNN(side, loc_filters)
        self.rnn = nn.GRU(self.loc.out_dim, rnn_units, batch_first=True)
        self.affine = AffineHead(rnn_units)
        self.classifier = GlimpseClassifier(self.size, n_classes, filters, dense)
        _glorot(self.loc)
        _glorot(self.classifier)
        for name, p in self.rnn.named_parameters():  # Lasagne's GRULayer: N(0, 0.1^2) and 0
            nn.init.normal_(p, 0.0, 0.1) if name.startswith("weight") else nn.init.zeros_(p)

    def transforms(self, images: torch.Tensor) -> torch.Tensor:
        features = self.loc(images)  # the same input at every step (the authors' Repeat layer)
        h, _ = self.rnn(features.unsqueeze(1).expand(-1, self.n_steps, -1))
        return self.affine(h)  # (B, T, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, g = self.glimpses(x)
        b, t = g.shape[:2]
        return self.classifier(g.reshape(b * t, 1, self.size, self.size)).reshape(b, t, -1)


class FFNSPN(_Reader):
    """Localisation CNN -> dense ``loc_dense`` -> one affine transform (identity at init) -> one
    glimpse -> CNN -> dense -> T softmax heads -> logits ``(B, T, n_classes)``."""

    def __init__(
        self,
        side: int = 100,
        n_steps: int = 3,
        n_classes: int = 10,
        downsample: float = 2.0,
        loc_filters: int = 20,
        loc_dense: int = 200,
        filters: int = 96,
        dense: int = 400,
    ) -> None:
        super().__init__()
        self.side, self.n_steps, self.n_classes = side, n_steps, n_classes
        self.size = glimpse_size(side, downsample)
        self.loc = LocalisationCNN(side, loc_filters)
        self.loc_dense = nn.Sequential(nn.Linear(self.loc.out_dim, loc_dense), nn.ReLU())
        self.affine = AffineHead(loc_dense)
        # T heads of n_classes on the shared dense layer == one linear layer of T * n_classes.
        self.classifier = GlimpseClassifier(self.size, n_steps * n_classes, filters, dense)
        _glorot(self.loc)
        _glorot(self.loc_dense)
        _glorot(self.classifier)

    def transforms(self, images: torch.Tensor) -> torch.Tensor:
        return self.affine(self.loc_dense(self.loc(images))).unsqueeze(1)  # (B, 1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, g = self.glimpses(x)
        return self.classifier(g).reshape(g.shape[0], self.n_steps, self.n_classes)


class CNNReader(_Reader):
    """The plain CNN baseline: the canvas down-sampled by the fixed identity transform (no
    localisation network), then the FFN-SPN's classifier and T heads."""

    def __init__(
        self,
        side: int = 100,
        n_steps: int = 3,
        n_classes: int = 10,
        downsample: float = 2.0,
        filters: int = 96,
        dense: int = 400,
    ) -> None:
        super().__init__()
        self.side, self.n_steps, self.n_classes = side, n_steps, n_classes
        self.size = glimpse_size(side, downsample)
        self.classifier = GlimpseClassifier(self.size, n_steps * n_classes, filters, dense)
        _glorot(self.classifier)

    def transforms(self, images: torch.Tensor) -> torch.Tensor:
        return identity_affine(images.shape[0], device=images.device).to(images.dtype).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, g = self.glimpses(x)
        return self.classifier(g).reshape(g.shape[0], self.n_steps, self.n_classes)


class SequenceModel(nn.Module):
    """The Pyro model ``p(y_1..T | x) = prod_t Cat(y_t | softmax(f_t(x)))``.

    ``y`` ``(B, T)`` is one observed site in the plates ``data`` (dim -2) and ``positions``
    (dim -1); with ``y=None`` the labels are sampled. ``beta`` is accepted for the common signature
    and unused (there is no latent variable to anneal).
    """

    def __init__(self, net: _Reader) -> None:
        super().__init__()
        self.net = net

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0
    ) -> torch.Tensor:
        logits = self.net(x)
        b, t = logits.shape[:2]
        with pyro.plate("data", b, dim=-2), pyro.plate("positions", t, dim=-1):
            return pyro.sample("y", dist.Categorical(logits=logits), obs=y)

    def classify(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Class probabilities ``(B, T, n_classes)`` (deterministic: ``num_samples`` is unused)."""
        return F.softmax(self.net(x), dim=-1)


class EmptyGuide(nn.Module):
    """The guide of a model without latent variables: samples nothing."""

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0
    ) -> None:
        return None


class SequencePair(Pair):
    """A :class:`Pair` whose classifier is the model itself (the guide is empty).

    ``classify(x) -> (B, T, n_classes)``; ``glimpses(x) -> (theta (B, K, 2, 3), glimpses)``.
    """

    def classify(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        return self.p.classify(x, num_samples=num_samples)

    def glimpses(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.p.net.glimpses(x)


def sequence_errors(probs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Single-digit error (over all B x T digits) and whole-sequence error (any digit wrong)."""
    wrong = probs.argmax(-1) != y
    return {"digit_error": wrong.float().mean().item(),
            "sequence_error": wrong.any(-1).float().mean().item()}


def _sampler(net: _Reader, hparams: dict[str, Any]) -> _Reader:
    """The glimpse sampler's conventions from ``hparams`` (``align_corners``, ``padding_mode``)."""
    net.align_corners = bool(hparams.get("align_corners", False))
    net.padding_mode = check_padding_mode(hparams.get("padding_mode", "zeros"))
    return net


def build_rnn_spn(hparams: dict[str, Any], data: Any) -> SequencePair:
    """RNN-SPN pair; hparams ``downsample`` (3), ``loc_filters`` (20), ``rnn_units`` (256),
    ``filters`` (32), ``dense`` (400)."""
    keys = ("downsample", "loc_filters", "rnn_units", "filters", "dense")
    net = _sampler(RNNSPN(**reader_dims(hparams, data), **pick(hparams, keys)), hparams)
    return SequencePair(SequenceModel(net), EmptyGuide(), max_plate_nesting=2)


def build_ffn_spn(hparams: dict[str, Any], data: Any) -> SequencePair:
    """FFN-SPN pair; hparams ``downsample`` (2), ``loc_filters`` (20), ``loc_dense`` (200),
    ``filters`` (96), ``dense`` (400)."""
    keys = ("downsample", "loc_filters", "loc_dense", "filters", "dense")
    net = _sampler(FFNSPN(**reader_dims(hparams, data), **pick(hparams, keys)), hparams)
    return SequencePair(SequenceModel(net), EmptyGuide(), max_plate_nesting=2)


def build_cnn(hparams: dict[str, Any], data: Any) -> SequencePair:
    """Plain CNN pair; hparams ``downsample`` (2), ``filters`` (96), ``dense`` (400)."""
    net = _sampler(CNNReader(**reader_dims(hparams, data),
                             **pick(hparams, ("downsample", "filters", "dense"))), hparams)
    return SequencePair(SequenceModel(net), EmptyGuide(), max_plate_nesting=2)
