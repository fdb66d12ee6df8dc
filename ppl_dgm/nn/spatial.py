"""Spatial-transformer pieces (Jaderberg et al. 2015) as used by the RNN-SPN (Sønderby et al. 2015).

The transformer maps each output pixel's normalised coordinates ``(u, v, 1)`` through a 2 x 3 affine
matrix ``A_theta`` to input coordinates and samples the input there bilinearly
(``F.affine_grid`` / ``F.grid_sample``). Coordinates are normalised to [-1, 1] with
``align_corners=False`` (-1 and 1 are the outer edges of the border pixels), so the identity matrix
with an output ``d`` times smaller than the input is exactly a bilinear ``1/d`` resize of the whole
input (an average of 2 x 2 blocks for ``d = 2``). The output side is ``int(side // d)`` as in
Lasagne's ``TransformerLayer`` (the authors' implementation): 100 -> 100, 50, 33, 25 for
``d = 1, 2, 3, 4``.

Deviation from the authors (kept as the default): Lasagne's transformer samples a corner-aligned
grid (source ``x = (x_t + 1) / 2 * (W - 1)``) and clamps at the border, which is
``align_corners=True, padding_mode="border"`` in torch's terms (torch clamps the coordinate, Lasagne
the neighbouring pixels: the two agree inside the input). :func:`transform` takes both as options;
the registered RNN-SPN pairs sample with ``align_corners=False`` and zero padding unless given
``--set align_corners=true --set padding_mode=border`` (their hyperparameters). The JAX twin
(:mod:`ppl_dgm.nn.spatial_jax`) takes the same options with the same meaning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ppl_dgm.nn.reader_shapes import glimpse_size  # noqa: F401  (re-exported)


def identity_affine(n: int = 1, device: torch.device | None = None) -> torch.Tensor:
    """``n`` identity transforms, shape ``(n, 2, 3)``."""
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device)
    return eye.expand(n, 2, 3).clone()


class AffineHead(nn.Linear):
    """Linear map from features to the 6 affine parameters, initialised to the identity transform.

    Weights start at zero and the bias at ``[1, 0, 0, 0, 1, 0]`` (the authors' ``A_net``), so at
    initialisation every glimpse is the down-sampled whole input whatever the features are.
    Returns ``(..., 2, 3)``.
    """

    def __init__(self, in_features: int) -> None:
        super().__init__(in_features, 6)
        with torch.no_grad():
            self.weight.zero_()
            self.bias.copy_(identity_affine(1).reshape(6))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return super().forward(h).reshape(*h.shape[:-1], 2, 3)


PADDING_MODES = ("zeros", "border")


def transform(
    images: torch.Tensor, theta: torch.Tensor, size: int | tuple[int, int],
    align_corners: bool = False, padding_mode: str = "zeros",
) -> torch.Tensor:
    """Sample ``images`` ``(N, C, H, W)`` with affine ``theta`` ``(N, 2, 3)`` onto a ``size`` grid.

    Bilinear sampling (``F.affine_grid`` / ``F.grid_sample``); by default the grid's -1 and 1 are
    the outer edges of the border pixels and the input is zero outside (``padding_mode="zeros"``).
    ``align_corners=True, padding_mode="border"`` is the authors' (Lasagne's) convention: -1 and 1
    are the centres of the corner pixels and samples outside take the nearest border value.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"unknown padding_mode {padding_mode!r}: use one of {PADDING_MODES}")
    h, w = (size, size) if isinstance(size, int) else size
    n, c = images.shape[:2]
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=align_corners)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode,
                         align_corners=align_corners)


def glimpse_corners(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates ``(x, y)`` of the glimpse's four corners in the input, ``(..., 4, 2)``.

    Corners in the order top-left, top-right, bottom-right, bottom-left, in the convention where
    pixel ``(i, j)`` has its centre at ``(j, i)`` (matplotlib's ``imshow``): normalised coordinate
    ``u`` is pixel ``(u + 1) * width / 2 - 0.5``.
    """
    corners = torch.tensor(
        [[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]],
        dtype=theta.dtype, device=theta.device,
    )
    uv = corners @ theta.transpose(-1, -2)  # (..., 4, 2) normalised input coordinates
    scale = torch.tensor([width / 2.0, height / 2.0], dtype=theta.dtype, device=theta.device)
    return (uv + 1.0) * scale - 0.5
