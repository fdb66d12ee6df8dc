"""Locating and reading MNIST from local files (never silently from the network in tests).

A folder named explicitly (``data_dir``, ``--data-dir``) is the only place searched: it must exist
(else :class:`~ppl_dgm.errors.UserError`), and a data set missing from it is an error, never read
from elsewhere; ``data_dir`` may also be the ``.npz`` file itself. Without it the search order is
the environment variable ``PPL_DGM_DATA``, then the user cache folder (``$PPL_DGM_CACHE``, else
``$XDG_CACHE_HOME/ppl_dgm``, else ``~/.cache/ppl_dgm``). In each folder either ``mnist.npz`` (keys
``x_train y_train x_test y_test``, uint8) or the four classic IDX ``.gz`` files are accepted. When
none has it and ``download=True`` (and no folder was named), the public mirrors are tried with
checksum verification, into the user cache; when that fails too, :class:`DataNotFoundError` lists
every place that was looked at. :func:`find_mnist` says which file is read.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from ppl_dgm.errors import UserError

ENV_VAR = "PPL_DGM_DATA"
NPZ_NAME = "mnist.npz"
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
# md5 of the classic IDX archives (the checksums torchvision verifies against the same mirrors).
IDX_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataNotFoundError(FileNotFoundError):
    """Raised when a data set is in none of the places searched; the message lists them."""


def cache_dir() -> Path:
    """The user cache folder where built data sets (and tutorial outputs) are kept:
    ``$PPL_DGM_CACHE``, else ``$XDG_CACHE_HOME/ppl_dgm``, else ``~/.cache/ppl_dgm``."""
    if os.environ.get("PPL_DGM_CACHE"):
        return Path(os.environ["PPL_DGM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ppl_dgm"


def named_dir(data_dir: str | os.PathLike) -> Path:
    """The folder the user named (``--data-dir``), which must exist and be a folder: else
    :class:`~ppl_dgm.errors.UserError` (never a silent fall-back to another folder)."""
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise UserError(f"--data-dir {path} does not exist",
                        "name the folder that holds the data files, or leave --data-dir out to "
                        f"search ${ENV_VAR} and the user cache")
    if not path.is_dir():
        raise UserError(f"--data-dir {path} is a file, not a folder",
                        "name the folder that holds the data files (an .npz file of your own is "
                        "given as --dataset FILE.npz)")
    return path


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for data files, in order: the named ``data_dir`` alone (it must exist:
    :func:`named_dir`), else ``$PPL_DGM_DATA`` and the user cache."""
    if data_dir is not None:
        return [named_dir(data_dir)]
    dirs = []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]))
    dirs.append(cache_dir())
    return dirs


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an ``.npz`` with the MNIST key layout, checking keys and shapes."""
    path = Path(path)
    fix = "write it with numpy.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...)"
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not an .npz archive (numpy.savez format)", fix)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in KEYS if k not in f.files]
            if missing:
                raise UserError(f"{path} lacks the keys {missing} (found {sorted(f.files)})",
                                f"a data set file needs {list(KEYS)}")
            arrays = {k: f[k] for k in KEYS}
    except UserError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(f"{path} could not be read as an .npz of plain arrays ({err})", fix) from err
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise UserError(f"{path}: x_{split} has shape {x.shape} but y_{split} {y.shape}",
                            "give one label (row) per image")
    return arrays


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {magic:#x})")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _found_in(d: Path) -> Path | None:
    """``d/mnist.npz`` when present, else ``d`` when it holds the four IDX files, else None."""
    if (d / NPZ_NAME).is_file():
        return d / NPZ_NAME
    if all((d / name).is_file() for name in IDX_FILES.values()):
        return d
    return None


def _read_found(found: Path) -> dict[str, np.ndarray]:
    if found.is_file():
        return read_npz(found)
    return {k: _read_idx(found / name) for k, name in IDX_FILES.items()}


def find_mnist(data_dir: str | os.PathLike | None = None) -> Path | None:
    """What :func:`load_mnist` reads (without downloading): the ``.npz`` file, or the folder of the
    IDX files; None when no searched folder has MNIST. ``data_dir`` may be the ``.npz`` itself."""
    if data_dir is not None and Path(data_dir).expanduser().is_file() \
            and Path(data_dir).suffix == ".npz":
        return Path(data_dir).expanduser()
    for d in search_dirs(data_dir):
        found = _found_in(d)
        if found is not None:
            return found
    return None


def _find(dirs: list[Path]) -> dict[str, np.ndarray] | None:
    for d in dirs:
        found = _found_in(d)
        if found is not None:
            return _read_found(found)
    return None


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(target: Path, timeout: float = 30.0) -> list[str]:
    """Fetch the IDX files into ``target``; returns the errors met (empty on success)."""
    target.mkdir(parents=True, exist_ok=True)
    errors = []
    for name, digest in IDX_MD5.items():
        if (target / name).is_file() and _md5(target / name) == digest:
            continue
        for mirror in MIRRORS:
            fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{name}.")
            try:
                with os.fdopen(fd, "wb") as out:
                    with urllib.request.urlopen(mirror + name, timeout=timeout) as response:
                        shutil.copyfileobj(response, out)
                if _md5(Path(tmp)) != digest:
                    errors.append(f"{mirror}{name}: checksum mismatch")
                    continue
                os.replace(tmp, target / name)
                break
            except OSError as err:
                errors.append(f"{mirror}{name}: {err}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            return errors
    return []


def load_mnist(
    data_dir: str | os.PathLike | None = None, download: bool = True
) -> dict[str, np.ndarray]:
    """The raw MNIST arrays ``x_train (60000, 28, 28) uint8, y_train, x_test, y_test``, from the
    file :func:`find_mnist` names (``data_dir``: a folder, which alone is searched, or the ``.npz``
    itself); downloaded into the user cache only when no folder was named."""
    found_at = find_mnist(data_dir)
    if found_at is not None:
        return _read_found(found_at)
    dirs = search_dirs(data_dir)
    errors: list[str] = []
    if data_dir is not None:
        looked = f"{dirs[0]}/{NPZ_NAME} or the IDX files {sorted(IDX_FILES.values())}"
        raise DataNotFoundError(
            f"MNIST is not in --data-dir {dirs[0]} (looked for {looked}); supply it there "
            f"({NPZ_NAME} with keys x_train y_train x_test y_test, or the four IDX .gz files), or "
            f"leave --data-dir out to search ${ENV_VAR} and the user cache (and download there)")
    if download:
        errors = _download(cache_dir())
        if not errors:
            found = _find([cache_dir()])
            if found is not None:
                return found
    looked = "\n".join(f"  - {d}/{NPZ_NAME} or the IDX files {sorted(IDX_FILES.values())}"
                       for d in dirs)
    tried = "\n".join(f"  - {e}" for e in errors) if errors else "  (download disabled)"
    raise DataNotFoundError(
        f"MNIST was not found. Looked in:\n{looked}\nDownload attempts:\n{tried}\n"
        f"Supply it by passing --data-dir DIR (or setting {ENV_VAR}=DIR) where DIR holds "
        f"{NPZ_NAME} (keys x_train y_train x_test y_test) or the four IDX .gz files."
    )
