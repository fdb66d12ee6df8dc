"""Cluttered MNIST digit sequences (Sønderby, Sønderby, Maaløe, Winther 2015, section 4.1).

Each canvas is ``canvas x canvas`` (100 x 100) and holds ``n_digits`` (3) MNIST digits of 28 x 28
placed side by side, plus ``n_clutter`` (8) clutter patches of ``clutter_size x clutter_size``
(9 x 9) cut from random MNIST digits of the same split, values clipped to [0, 1]. The placement
follows the authors' generator (``skaae/recurrent-spatial-transformer-code``,
``MNIST_SEQUENCE/create_mnist_sequence.py``):

- horizontal start: the row of digits is centred, ``base = (canvas - n_digits * 28) // 2``, and
  shifted by a uniform integer offset in ``[-base, base)``: the first digit starts in
  ``[0, 2 base)``;
- vertical start: uniform in ``[0, canvas)``; digit ``i`` starts ``i * slope`` lower, with the slope
  uniform in ``[-14, 14)`` (half a digit); each start is clipped so the digit stays on the canvas;
- the clutter patches are written onto an empty canvas (a later patch overwrites an earlier one) at
  uniform positions in ``[0, canvas - clutter_size)``, taken from uniform positions in
  ``[0, 28 - clutter_size)`` of uniformly drawn digits; the digits are added on top with clipping.

Splits: 60k training canvases (the first 50k built from MNIST training images 0..49,999, the last
10k from images 50,000..59,999, so that holding out the last 10k canvases as validation, as the
trainer does, keeps the validation canvases built from their own images) and 10k test canvases
from the MNIST test set.
Every part has its own random stream spawned from ``seed``: the data set is reproducible bit for
bit.

Everything is vectorised over canvases (Python loops run over digit positions and clutter patches
only, through a writeable window view of the canvases); the 80k canvases build in about two seconds
and are cached as a uint8 ``.npz`` (file name keyed by the options and the seed, written atomically)
and returned as float32 in [0, 1].
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppl_dgm.data.image_data import ImageData
from ppl_dgm.data.mnist import cache_dir, load_mnist, search_dirs

DIGIT = 28
CACHE_VERSION = 1
# Independent random streams per part of the data set (spawned from the user's seed).
_STREAMS = {"train": 0, "valid": 1, "test": 2}


@dataclass
class Sequences:
    """Canvases (uint8, ``(n, canvas, canvas)``), labels ``(n, n_digits)`` and the top-left corner
    ``(row, col)`` of every digit, ``(n, n_digits, 2)``."""

    x: np.ndarray
    y: np.ndarray
    top_left: np.ndarray



def _windows(canvases: np.ndarray, h: int, w: int) -> np.ndarray:
    """A writeable view ``(n, H-h+1, W-w+1, h, w)``: ``[i, r, c]`` is the h x w block at (r, c)."""
    n, height, width = canvases.shape
    s0, s1, s2 = canvases.strides
    return np.lib.stride_tricks.as_strided(
        canvases, shape=(n, height - h + 1, width - w + 1, h, w),
        strides=(s0, s1, s2, s1, s2), writeable=True,
    )


def _paste(canvases: np.ndarray, patches: np.ndarray, top: np.ndarray, left: np.ndarray) -> None:
    """``canvases[i, top[i]:top[i]+h, left[i]:left[i]+w] = patches[i]`` for all i at once.

    Through the window view the n block writes are one fancy-indexed assignment (about 10x faster
    than indexing pixel rows).
    """
    h, w = patches.shape[1:]
    _windows(canvases, h, w)[np.arange(len(canvases)), top, left] = patches


def make_sequences(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    n_digits: int = 3,
    n_clutter: int = 8,
    canvas: int = 100,
    clutter_size: int = 9,
    rng: np.random.Generator | None = None,
    out: np.ndarray | None = None,
) -> Sequences:
    """Build ``n`` cluttered canvases from ``images`` (uint8 ``(M, 28, 28)``) and their ``labels``.

    Digits and clutter sources are drawn uniformly with replacement from ``images``. Returns uint8
    canvases (pixel values are the MNIST bytes, summed with clutter and clipped at 255), written
    into ``out`` (uint8 ``(n, canvas, canvas)``, C-contiguous) when given.
    """
    rng = np.random.default_rng() if rng is None else rng
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != (DIGIT, DIGIT):
        raise ValueError(f"images must be uint8 of shape (M, 28, 28), got {images.dtype} "
                         f"{images.shape}")
    if n_digits * DIGIT > canvas:
        raise ValueError(f"{n_digits} digits of width {DIGIT} do not fit a canvas of {canvas}")
    if not 0 < clutter_size <= DIGIT or clutter_size > canvas:
        raise ValueError(f"clutter_size must lie in 1..{min(DIGIT, canvas)}")
    m = len(images)

    # Digits and their places (the authors' create_sample).
    which = rng.integers(0, m, size=(n, n_digits))
    base = (canvas - n_digits * DIGIT) // 2
    x0 = rng.integers(0, 2 * base, size=n) if base > 0 else np.zeros(n, dtype=np.int64)
    y0 = rng.integers(0, canvas, size=n)
    half = DIGIT // 2
    slope = rng.integers(-half, half, size=n)
    steps = np.arange(n_digits)
    top = np.clip(y0[:, None] + steps[None, :] * slope[:, None], 0, canvas - DIGIT)
    left = x0[:, None] + steps[None, :] * DIGIT

    # Clutter: random 9 x 9 patches of random digits of the same split, at random places.
    if out is None:
        clutter = np.zeros((n, canvas, canvas), dtype=np.uint8)
    else:
        if out.shape != (n, canvas, canvas) or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous uint8 of shape {(n, canvas, canvas)}")
        clutter = out
        clutter[...] = 0
    if n_clutter > 0:
        src = rng.integers(0, m, size=(n, n_clutter))
        src_r = rng.integers(0, DIGIT - clutter_size, size=(n, n_clutter))
        src_c = rng.integers(0, DIGIT - clutter_size, size=(n, n_clutter))
        dst_r = rng.integers(0, canvas - clutter_size, size=(n, n_clutter))
        dst_c = rng.integers(0, canvas - clutter_size, size=(n, n_clutter))
        patches = np.lib.stride_tricks.sliding_window_view(
            images, (clutter_size, clutter_size), axis=(1, 2)
        )
        for k in range(n_clutter):  # in order: a later patch overwrites an earlier one
            _paste(clutter, patches[src[:, k], src_r[:, k], src_c[:, k]], dst_r[:, k], dst_c[:, k])

    # canvas = clip(clutter + digits, 0, 1) on bytes; the digits never overlap one another (each
    # sits in its own 28-wide column), so each is added into its window of the clutter canvas.
    x = clutter
    for t in range(n_digits):
        under = _windows(x, DIGIT, DIGIT)[np.arange(n), top[:, t], left[:, t]]
        summed = np.minimum(under.astype(np.uint16) + images[which[:, t]], 255).astype(np.uint8)
        _paste(x, summed, top[:, t], left[:, t])
    y = np.asarray(labels)[which].astype(np.int64)
    return Sequences(x, y, np.stack([top, left], axis=-1).astype(np.int64))


def validation_size(n_train: int) -> int:
    """Canvases built from the validation images: 10k when ``n_train >= 50k``, else 10%.

    The rule of the trainer's default hold-out (``train.loop.default_validation_size``), so that
    the held-out canvases are exactly those built from the held-out MNIST images.
    """
    return 10_000 if n_train >= 50_000 else n_train // 10


def cache_name(
    n_digits: int, n_clutter: int, canvas: int, clutter_size: int, n_train: int, n_test: int,
    seed: int,
) -> str:
    """The cache file name: every option and the seed are part of it."""
    return (f"mnist_sequence_v{CACHE_VERSION}_d{n_digits}_c{n_clutter}x{clutter_size}"
            f"_s{canvas}_n{n_train}-{n_test}_seed{seed}.npz")


def _save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build_mnist_sequence(
    mnist: dict[str, np.ndarray],
    n_digits: int = 3,
    n_clutter: int = 8,
    canvas: int = 100,
    clutter_size: int = 9,
    n_train: int = 60000,
    n_test: int = 10000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Build the uint8 arrays ``x_train y_train pos_train x_test y_test pos_test`` from raw MNIST.

    Training canvases: the last ``validation_size(n_train)`` (10k of 60k) are built from MNIST
    training images 50,000..59,999 (the matching validation split; the trainer holds out the same
    number of last training points), the others from images 0..49,999; test canvases from the MNIST
    test images.
    """
    opts = dict(n_digits=n_digits, n_clutter=n_clutter, canvas=canvas, clutter_size=clutter_size)
    n_valid = validation_size(n_train)
    n_fit = n_train - n_valid
    xs, ys = mnist["x_train"], mnist["y_train"]
    n_img = len(xs)
    split = n_img - n_img // 6  # 50,000 on MNIST
    ss = np.random.SeedSequence(seed)
    children = ss.spawn(len(_STREAMS))
    streams = {k: np.random.default_rng(c) for k, c in zip(_STREAMS, children, strict=True)}
    x_train = np.empty((n_train, canvas, canvas), dtype=np.uint8)
    fit = make_sequences(xs[:split], ys[:split], n_fit, rng=streams["train"], out=x_train[:n_fit],
                         **opts)
    valid = make_sequences(xs[split:], ys[split:], n_valid, rng=streams["valid"],
                           out=x_train[n_fit:], **opts)
    test = make_sequences(mnist["x_test"], mnist["y_test"], n_test, rng=streams["test"], **opts)
    return {
        "x_train": x_train,
        "y_train": np.concatenate([fit.y, valid.y]),
        "pos_train": np.concatenate([fit.top_left, valid.top_left]),
        "x_test": test.x,
        "y_test": test.y,
        "pos_test": test.top_left,
    }


def load_mnist_sequence(
    data_dir: str | os.PathLike | None = None,
    n_digits: int = 3,
    n_clutter: int = 8,
    canvas: int = 100,
    clutter_size: int = 9,
    n_train: int = 60000,
    n_test: int = 10000,
    seed: int = 0,
    cache: bool = True,
):
    """The cluttered MNIST sequence data set as :class:`~ppl_dgm.data.image_data.ImageData`.

    ``x`` is float32 ``(N, canvas, canvas)`` in [0, 1], ``y`` int64 ``(N, n_digits)``. The arrays
    are looked up by their cache name in ``data_dir`` (else ``$PPL_DGM_DATA``) and the user cache;
    when absent they are built from MNIST (found the usual way: :func:`ppl_dgm.data.mnist.find_mnist`,
    ``data_dir`` may be the ``mnist.npz`` itself) and saved into the user cache folder
    (:func:`ppl_dgm.data.mnist.cache_dir`), never into a data folder given for reading
    (``cache=False`` builds without reading or writing).
    """
    opts = dict(n_digits=int(n_digits), n_clutter=int(n_clutter), canvas=int(canvas),
                clutter_size=int(clutter_size), n_train=int(n_train), n_test=int(n_test),
                seed=int(seed))
    name = cache_name(**opts)
    arrays = None
    if cache:
        named_file = data_dir is not None and Path(data_dir).expanduser().is_file()
        folders = [] if named_file else search_dirs(data_dir)  # a named folder must exist
        for d in dict.fromkeys([*folders, cache_dir()]):
            if (d / name).is_file():
                with np.load(d / name, allow_pickle=False) as f:
                    arrays = {k: f[k] for k in f.files}
                break
    if arrays is None:
        arrays = build_mnist_sequence(load_mnist(data_dir), **opts)
        if cache:
            _save_atomic(cache_dir() / name, arrays)

    def to_float(x: np.ndarray) -> np.ndarray:
        out = x.astype(np.float32)
        out /= np.float32(255.0)
        return out

    return ImageData("mnist-sequence", to_float(arrays["x_train"]), arrays["y_train"],
                     to_float(arrays["x_test"]), arrays["y_test"], 10)
