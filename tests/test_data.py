"""Loaders, their errors, the balanced split and binarisation."""

import gzip
import struct

import numpy as np
import pytest

from ppl_dgm.data import (
    DataNotFoundError,
    balanced_labelled_indices,
    binarize_static,
    load_dataset,
    semi_supervised_split,
)
from ppl_dgm.data import mnist as mnist_module
from tests.conftest import mnist_dir


def write_idx(path, array):
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(
        struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_arrays(rng, n_train=30, n_test=10):
    return {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "y_train": np.arange(n_train) % 10, "x_test": rng.integers(0, 256, (n_test, 28, 28),
                                                                       dtype=np.uint8),
            "y_test": np.arange(n_test) % 10}


def test_missing_mnist_lists_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_DGM_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist_module, "_download", lambda target: ["mirror: no network"])
    with pytest.raises(DataNotFoundError) as err:
        mnist_module.load_mnist()
    message = str(err.value)
    for place in ("env", "cache"):
        assert str(tmp_path / place) in message
    assert "no network" in message and "--data-dir" in message
    # a folder named explicitly is the only place looked (and nothing is downloaded for it)
    (tmp_path / "explicit").mkdir()
    monkeypatch.setattr(mnist_module, "_download", lambda target: pytest.fail("downloaded"))
    with pytest.raises(DataNotFoundError) as err:
        mnist_module.load_mnist(tmp_path / "explicit")
    assert str(tmp_path / "explicit") in str(err.value) and str(tmp_path / "env") not in str(err.value)


def test_idx_files_are_read(tmp_path):
    arrays = fake_arrays(np.random.default_rng(0))
    for key, name in mnist_module.IDX_FILES.items():
        write_idx(tmp_path / name, arrays[key])
    loaded = mnist_module.load_mnist(tmp_path, download=False)
    for key in arrays:
        np.testing.assert_array_equal(loaded[key], arrays[key])


def test_npz_by_path_and_bad_keys(tmp_path):
    arrays = fake_arrays(np.random.default_rng(1))
    np.savez(tmp_path / "mine.npz", **arrays)
    data = load_dataset(tmp_path / "mine.npz")
    assert data.x_train.shape == (30, 28, 28) and data.x_train.dtype == np.float32
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    np.testing.assert_allclose(data.x_train * 255, arrays["x_train"], atol=1e-3)
    np.savez(tmp_path / "bad.npz", images=arrays["x_train"])
    with pytest.raises(ValueError, match="lacks the keys"):
        load_dataset(tmp_path / "bad.npz")
    with pytest.raises(DataNotFoundError):
        load_dataset(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("cifar")


def test_digits_split_is_fixed():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.x_train.shape == (1300, 8, 8) and a.x_test.shape == (497, 8, 8)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.x_train.max() == 1.0 and a.n_classes == 10


@pytest.mark.skipif(mnist_dir() is None, reason="the shared MNIST file is not next to the repo")
def test_real_mnist_checks():
    data = load_dataset("mnist", mnist_dir())
    assert data.x_train.shape == (60000, 28, 28) and data.x_test.shape == (10000, 28, 28)
    assert list(data.y_train[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert list(data.y_test[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert abs(data.x_train.mean() - 0.1307) < 1e-3


def test_balanced_split():
    y = np.random.default_rng(0).integers(0, 10, 5000)
    idx = balanced_labelled_indices(y, 100, seed=3)
    assert len(np.unique(idx)) == 100
    assert np.all(np.bincount(y[idx], minlength=10) == 10)
    np.testing.assert_array_equal(idx, balanced_labelled_indices(y, 100, seed=3))
    assert not np.array_equal(idx, balanced_labelled_indices(y, 100, seed=4))
    with pytest.raises(ValueError, match="multiple"):
        balanced_labelled_indices(y, 95, seed=0)


def test_semi_supervised_split_options():
    y = np.arange(1000) % 10
    split = semi_supervised_split(y, 50, seed=0, n_validation=200)
    assert split.validation.tolist() == list(range(800, 1000))
    assert split.labelled.max() < 800
    assert set(split.labelled) <= set(split.unlabelled) and len(split.unlabelled) == 800
    excl = semi_supervised_split(y, 50, seed=0, n_validation=200,
                                 include_labelled_in_unlabelled=False)
    assert not set(excl.labelled) & set(excl.unlabelled) and len(excl.unlabelled) == 750


def test_static_binarisation_is_seeded_and_unbiased():
    x = np.full((200, 50), 0.3, dtype=np.float32)
    a, b = binarize_static(x, 0), binarize_static(x, 0)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0.0, 1.0}
    assert abs(a.mean() - 0.3) < 0.01


def test_tests_do_not_see_the_users_environment():
    """conftest's autouse fixture: no PPL_DGM_* variable, and the user cache is a fresh folder of
    the test's own (a user's PPL_DGM_CACHE, PPL_DGM_DATA or ~/.cache/ppl_dgm changes nothing)."""
    import os
    from pathlib import Path

    assert not [name for name in os.environ if name.startswith("PPL_DGM_")]
    cache = mnist_module.cache_dir()
    assert cache.parent == Path(os.environ["XDG_CACHE_HOME"]) and not cache.exists()
    assert Path.home() / ".cache" not in cache.parents
    assert mnist_module.search_dirs() == [cache]
