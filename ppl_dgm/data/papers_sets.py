"""The papers' other data sets, read from their official files (never downloaded).

- ``svhn``: the Street View House Numbers, cropped digits (the ADGM/SDGM paper's SVHN table):
  ``train_32x32.mat`` and ``test_32x32.mat`` (MATLAB files with ``X`` of shape (32, 32, 3, N)
  uint8 and ``y`` of shape (N, 1), digit 0 labelled 10), from http://ufldl.stanford.edu/housenumbers/.
  Images are returned as ``(N, 32, 32, 3)`` in [0, 1]; label 10 becomes 0. (The ``extra`` set is
  not read.)
- ``norb``: small NORB (the ADGM/SDGM paper's NORB table): the four files
  ``smallnorb-5x46789x9x18x6x2x96x96-training-{dat,cat}.mat`` and
  ``smallnorb-5x01235x9x18x6x2x96x96-testing-{dat,cat}.mat`` (the NYU binary matrix format, not
  MATLAB: a magic number, the rank, at least three dimensions, then the values, little-endian), from
  https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/ (24,300 stereo pairs of 96 x 96 each split,
  5 categories). Options (``--data-option``): ``size`` (default 32: each image area-averaged
  from 96 x 96 to ``size`` x ``size``; 96 keeps them as they are; ``size`` must divide 96) and
  ``stereo`` (default true: both cameras, ``(N, 2, size, size)``; false: the left camera,
  ``(N, size, size)``). *(reconstructed)* The paper's exact preprocessing of NORB is not stated
  here; 32 x 32 stereo pairs are the defaults, both are options.
- ``omniglot``: the binarised-Omniglot split of the IWAE and LVAE papers, ``chardata.mat`` from
  https://github.com/yburda/iwae/tree/master/datasets/OMNIGLOT (``data`` (784, 24345) and
  ``testdata`` (784, 8070) intensities in [0, 1], ``target``/``testtarget`` one-hot alphabets).
  Pixels are laid out as the IWAE code reads them (``data.T.reshape(-1, 28, 28)`` reshaped to
  784 in Fortran order); labels are the 50 alphabets. The trainers binarise dynamically, as the
  LVAE paper did.

Each is looked for in the folders of :func:`ppl_dgm.data.mnist.search_dirs` (``--data-dir``,
``$PPL_DGM_DATA``, the user cache) and in a sub-folder named after the data set in each of them
(e.g. ``$PPL_DGM_DATA/svhn/train_32x32.mat``); when it is in none of them,
:class:`~ppl_dgm.data.mnist.DataNotFoundError` lists where it looked and where to get the files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ppl_dgm.data.mnist import ENV_VAR, DataNotFoundError, search_dirs
from ppl_dgm.errors import UserError

SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
NORB_FILES = {
    "x_train": "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat",
    "y_train": "smallnorb-5x46789x9x18x6x2x96x96-training-cat.mat",
    "x_test": "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat",
    "y_test": "smallnorb-5x01235x9x18x6x2x96x96-testing-cat.mat",
}
OMNIGLOT_FILE = "chardata.mat"
SOURCES = {
    "svhn": "http://ufldl.stanford.edu/housenumbers/ (train_32x32.mat, test_32x32.mat)",
    "norb": "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/ (the four *-dat.mat / *-cat.mat "
            "files, un-gzipped)",
    "omniglot": "https://github.com/yburda/iwae/tree/master/datasets/OMNIGLOT (chardata.mat)",
}
# magic numbers of the small-NORB binary matrix format: element type
_NORB_MAGIC = {0x1E3D4C55: np.uint8, 0x1E3D4C54: np.int32, 0x1E3D4C51: np.float32,
               0x1E3D4C53: np.float64, 0x1E3D4C56: np.int16}


def _locate(name: str, files: list[str], data_dir: str | os.PathLike | None) -> Path:
    """The first folder holding every one of ``files`` (each search folder, then its ``name``
    sub-folder); raises ``DataNotFoundError`` listing the places and the source otherwise."""
    looked = []
    for base in search_dirs(data_dir):
        for folder in (base, base / name):
            looked.append(folder)
            if all((folder / f).is_file() for f in files):
                return folder
    places = "\n".join(f"  - {folder}" for folder in looked)
    raise DataNotFoundError(
        f"{name} was not found (it is never downloaded). Looked for {', '.join(files)} in:\n"
        f"{places}\nGet it from {SOURCES[name]} and pass --data-dir DIR (or set {ENV_VAR}=DIR) "
        f"where DIR (or DIR/{name}) holds the files.")


def _loadmat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    try:
        content = loadmat(path)
    except (ValueError, OSError, TypeError, NotImplementedError) as err:
        raise UserError(f"{path} could not be read as a MATLAB file ({err})",
                        "replace it with the official file") from err
    missing = [k for k in keys if k not in content]
    if missing:
        raise UserError(f"{path} lacks the variables {missing}",
                        "replace it with the official file")
    return {k: np.asarray(content[k]) for k in keys}


def load_svhn(data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """SVHN's cropped digits: ``x`` (N, 32, 32, 3) uint8 and labels 0..9 (10 read as 0)."""
    folder = _locate("svhn", list(SVHN_FILES.values()), data_dir)
    out = {}
    for split, filename in SVHN_FILES.items():
        mat = _loadmat(folder / filename, ("X", "y"))
        x, y = mat["X"], mat["y"].reshape(-1).astype(np.int64)
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
            raise UserError(f"{folder / filename}: X has shape {x.shape} and y {mat['y'].shape}",
                            "the official file holds X (32, 32, 3, N) and y (N, 1)")
        out[f"x_{split}"] = np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2)))
        out[f"y_{split}"] = np.where(y == 10, 0, y)
    return out


def read_norb(path: Path) -> np.ndarray:
    """One small-NORB binary matrix (``*-dat.mat`` uint8 images, ``*-cat.mat`` int32 labels)."""
    raw = path.read_bytes()
    if len(raw) < 20:
        raise UserError(f"{path} is too short for a small-NORB matrix", "replace it with the "
                        "official (un-gzipped) file")
    magic, ndim = np.frombuffer(raw[:8], "<i4")
    if int(magic) & 0xFFFFFFFF not in _NORB_MAGIC or not 1 <= ndim <= 8:
        raise UserError(f"{path} is not a small-NORB binary matrix (magic {int(magic) & 0xFFFFFFFF:#x})",
                        "un-gzip the official file (gunzip *.mat.gz)")
    dtype = np.dtype(_NORB_MAGIC[int(magic) & 0xFFFFFFFF]).newbyteorder("<")
    stored = max(int(ndim), 3)  # at least three dimensions are stored
    dims = [int(d) for d in np.frombuffer(raw[8:8 + 4 * stored], "<i4")][:int(ndim)]
    offset = 8 + 4 * stored
    count = int(np.prod(dims))
    if len(raw) - offset != count * dtype.itemsize:
        raise UserError(f"{path}: {len(raw) - offset} bytes of values for shape {dims}",
                        "the file is truncated: get it again")
    return np.frombuffer(raw, dtype, count, offset).reshape(dims)


def load_norb(data_dir: str | os.PathLike | None = None, size: int = 32,
              stereo: bool = True) -> dict[str, np.ndarray]:
    """Small NORB: ``x`` (N, 2, size, size) (or (N, size, size) with ``stereo=False``) as float32
    in [0, 1], labels 0..4."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or 96 % size:
        raise UserError(f"--data-option size={size}: must divide 96", "e.g. size=32, 48 or 96")
    folder = _locate("norb", list(NORB_FILES.values()), data_dir)
    out = {}
    for split in ("train", "test"):
        x = read_norb(folder / NORB_FILES[f"x_{split}"])
        y = read_norb(folder / NORB_FILES[f"y_{split}"]).reshape(-1).astype(np.int64)
        if x.ndim != 4 or x.shape[1] != 2 or x.shape[2:] != (96, 96) or len(x) != len(y):
            raise UserError(f"{folder}: the {split} images have shape {x.shape}, labels "
                            f"{y.shape}", "the official files hold (N, 2, 96, 96) and (N,)")
        if not stereo:
            x = x[:, :1]
        f = 96 // size
        x = x.reshape(len(x), x.shape[1], size, f, size, f).astype(np.float32).mean((3, 5)) / 255.0
        out[f"x_{split}"] = x if stereo else x[:, 0]
        out[f"y_{split}"] = y
    return out


def load_omniglot(data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The IWAE/LVAE Omniglot split: ``x`` (N, 28, 28) float32 in [0, 1], labels the alphabets."""
    folder = _locate("omniglot", [OMNIGLOT_FILE], data_dir)
    mat = _loadmat(folder / OMNIGLOT_FILE, ("data", "target", "testdata", "testtarget"))
    out = {}
    for split, xk, yk in (("train", "data", "target"), ("test", "testdata", "testtarget")):
        data, target = mat[xk], mat[yk]
        if data.ndim != 2 or data.shape[0] != 784 or target.shape[1:] != data.shape[1:]:
            raise UserError(f"{folder / OMNIGLOT_FILE}: {xk} has shape {data.shape}, {yk} "
                            f"{target.shape}", "the official file holds (784, N) and (50, N)")
        x = data.T.astype(np.float32).reshape(-1, 28, 28).reshape(-1, 784, order="F")
        out[f"x_{split}"] = np.ascontiguousarray(x.reshape(-1, 28, 28))
        out[f"y_{split}"] = target.argmax(0).astype(np.int64)
    return out


LOADERS = {"svhn": load_svhn, "norb": load_norb, "omniglot": load_omniglot}
