"""Spatial-transformer pieces in JAX: the twin of :mod:`ppl_dgm.nn.spatial` (which imports torch).

The same convention as ``F.affine_grid`` / ``F.grid_sample`` with ``align_corners=False``,
bilinear interpolation and zero padding: output pixel ``(i, j)`` of an ``h x w`` grid has the
normalised coordinates ``u_j = (2 j + 1) / w - 1``, ``v_i = (2 i + 1) / h - 1`` (-1 and 1 are the
outer edges of the border pixels); the affine matrix maps ``(u, v, 1)`` to input coordinates
``(x, y)``, which are input pixel ``((x + 1) W - 1) / 2``, ``((y + 1) H - 1) / 2``; the four
neighbouring pixels are mixed bilinearly and a neighbour outside the input counts as 0. So the
identity matrix with an output ``d`` times smaller than the input is a bilinear ``1/d`` resize of
the whole input. The glimpse side is ``int(side // d)`` (Lasagne's ``TransformerLayer``).

``align_corners=True`` (output pixel ``j`` at ``-1 + 2 j / (w - 1)``, input pixel
``(x + 1) (W - 1) / 2``) and ``padding_mode="border"`` (the coordinate clamped to the input, as
torch's border padding) give the authors' corner-aligned, border-clamping sampler; the defaults are
torch's ``align_corners=False`` and zero padding (the deviation is described in
:mod:`ppl_dgm.nn.spatial`). Importing this module imports JAX, never torch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ppl_dgm.nn.reader_shapes import glimpse_size  # noqa: F401  (re-exported)

__all__ = ["affine_grid", "glimpse_size", "grid_sample", "identity_affine", "transform"]


def identity_affine(n: int = 1, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """``n`` identity transforms, shape ``(n, 2, 3)``."""
    eye = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype)
    return jnp.broadcast_to(eye, (n, 2, 3))


PADDING_MODES = ("zeros", "border")


def _base_coordinates(n: int, align_corners: bool, dtype: jnp.dtype) -> jax.Array:
    """Normalised coordinates of ``n`` output pixels along one axis (torch's convention)."""
    steps = jnp.arange(n, dtype=dtype)
    if not align_corners:
        return (2.0 * steps + 1.0) / n - 1.0
    return steps * 0.0 if n == 1 else 2.0 * steps / (n - 1) - 1.0


def affine_grid(theta: jax.Array, height: int, width: int,
                align_corners: bool = False) -> jax.Array:
    """Normalised input coordinates ``(x, y)`` of every output pixel, ``(N, height, width, 2)``.

    ``F.affine_grid(theta, [N, C, height, width], align_corners=align_corners)`` for
    ``theta (N, 2, 3)``.
    """
    u = _base_coordinates(width, align_corners, theta.dtype)
    v = _base_coordinates(height, align_corners, theta.dtype)
    uu, vv = jnp.meshgrid(u, v)  # (height, width): uu varies along the columns
    base = jnp.stack([uu, vv, jnp.ones_like(uu)], axis=-1)  # (height, width, 3)
    return jnp.einsum("hwk,nck->nhwc", base, theta)


def grid_sample(images: jax.Array, grid: jax.Array, align_corners: bool = False,
                padding_mode: str = "zeros") -> jax.Array:
    """Sample ``images (N, C, H, W)`` bilinearly at ``grid (N, h, w, 2)``.

    ``F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode,
    align_corners=align_corners)``; returns ``(N, C, h, w)``. ``"zeros"``: a neighbour outside the
    input counts as 0; ``"border"``: the coordinate is clamped to the input first. Differentiable
    in ``images`` and in ``grid`` (through the bilinear weights; with zero padding glimpses
    entirely off the input have no gradient, as in torch).
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"unknown padding_mode {padding_mode!r}: use one of {PADDING_MODES}")
    n, c, height, width = images.shape
    h, w = grid.shape[1:3]
    if align_corners:
        ix = (grid[..., 0] + 1.0) / 2.0 * (width - 1)  # (N, h, w) input column
        iy = (grid[..., 1] + 1.0) / 2.0 * (height - 1)  # input row
    else:
        ix = ((grid[..., 0] + 1.0) * width - 1.0) / 2.0
        iy = ((grid[..., 1] + 1.0) * height - 1.0) / 2.0
    if padding_mode == "border":
        ix, iy = jnp.clip(ix, 0, width - 1), jnp.clip(iy, 0, height - 1)
    x0, y0 = jnp.floor(ix), jnp.floor(iy)
    dx, dy = ix - x0, iy - y0
    flat = images.reshape(n, c, height * width)
    out = jnp.zeros((n, c, h * w), images.dtype)
    for row, col, weight in ((y0, x0, (1 - dy) * (1 - dx)), (y0, x0 + 1, (1 - dy) * dx),
                             (y0 + 1, x0, dy * (1 - dx)), (y0 + 1, x0 + 1, dy * dx)):
        inside = (row >= 0) & (row <= height - 1) & (col >= 0) & (col <= width - 1)
        index = (jnp.clip(row, 0, height - 1) * width + jnp.clip(col, 0, width - 1)).astype(jnp.int32)
        values = jnp.take_along_axis(flat, jnp.broadcast_to(index.reshape(n, 1, h * w),
                                                            (n, c, h * w)), axis=-1)
        out = out + values * jnp.where(inside, weight, 0.0).reshape(n, 1, h * w)
    return out.reshape(n, c, h, w)


def transform(images: jax.Array, theta: jax.Array, size: int | tuple[int, int],
              align_corners: bool = False, padding_mode: str = "zeros") -> jax.Array:
    """Sample ``images`` ``(N, C, H, W)`` with affine ``theta`` ``(N, 2, 3)`` onto a ``size`` grid.

    Bilinear sampling, zeros outside the input by default; returns ``(N, C, size, size)`` (or
    ``(N, C, h, w)`` for ``size=(h, w)``), as :func:`ppl_dgm.nn.spatial.transform` with the same
    ``align_corners`` and ``padding_mode``.
    """
    h, w = (size, size) if isinstance(size, int) else size
    return grid_sample(images, affine_grid(theta, h, w, align_corners), align_corners,
                       padding_mode)
