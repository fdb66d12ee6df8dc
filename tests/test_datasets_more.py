"""The papers' other data sets (SVHN, small NORB, Omniglot) read from tiny synthetic files written
in the official formats; the "looked here, get it there" error when they are missing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.io import savemat

from ppl_dgm.data import DataNotFoundError, load_dataset
from ppl_dgm.errors import UserError


@pytest.fixture(autouse=True)
def no_real_data(monkeypatch, tmp_path):
    """Only the test's folders are searched (not the user's cache or $PPL_DGM_DATA)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PPL_DGM_DATA", raising=False)


def write_svhn(folder, n_train=20, n_test=10, seed=0):
    """train_32x32.mat / test_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) with 10 for digit 0."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        images[split] = (x, y)
    return images


def test_svhn_reads_the_official_layout(tmp_path):
    written = write_svhn(tmp_path / "svhn")  # in the data set's sub-folder
    data = load_dataset("svhn", tmp_path)
    x, y = written["train"]
    assert data.x_train.shape == (20, 32, 32, 3) and data.x_test.shape == (10, 32, 32, 3)
    assert data.n_classes == 10
    # image n is X[:, :, :, n] / 255; label 10 is the digit 0
    np.testing.assert_allclose(data.x_train[7], x[:, :, :, 7] / 255.0, atol=1e-7)
    assert data.y_train[9] == 0 and y[9, 0] == 10
    assert data.y_train[:9].tolist() == list(range(1, 10))


def write_norb_matrix(path, array):
    """The small-NORB binary matrix format: magic, rank, max(rank, 3) dimensions, values (LE)."""
    magic = {np.uint8: 0x1E3D4C55, np.int32: 0x1E3D4C54}[array.dtype.type]
    dims = list(array.shape) + [1] * max(0, 3 - array.ndim)
    header = np.array([magic, array.ndim, *dims], "<i4").tobytes()
    path.write_bytes(header + array.astype(array.dtype.newbyteorder("<")).tobytes())


def write_norb(folder, n=10, seed=1):
    from ppl_dgm.data.papers_sets import NORB_FILES

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split in ("train", "test"):
        x = rng.integers(0, 256, (n, 2, 96, 96), dtype=np.uint8)
        y = (np.arange(n) % 5).astype(np.int32)
        write_norb_matrix(folder / NORB_FILES[f"x_{split}"], x)
        write_norb_matrix(folder / NORB_FILES[f"y_{split}"], y)
        arrays[split] = (x, y)
    return arrays


def test_norb_reads_the_binary_matrices_and_downsamples(tmp_path):
    written = write_norb(tmp_path)
    x, y = written["train"]
    data = load_dataset("norb", tmp_path)  # defaults: 32 x 32, both cameras
    assert data.x_train.shape == (10, 2, 32, 32) and data.n_classes == 5
    assert data.y_train.tolist() == y.tolist()
    # pixel (i, j) of camera c is the mean of the 3 x 3 block at (3i, 3j), over 255
    for n, c, i, j in ((0, 0, 0, 0), (3, 1, 10, 31), (9, 0, 31, 5)):
        block = x[n, c, 3 * i:3 * i + 3, 3 * j:3 * j + 3].astype(np.float64)
        assert data.x_train[n, c, i, j] == pytest.approx(block.mean() / 255.0, abs=1e-6)
    left = load_dataset("norb", tmp_path, size=96, stereo=False)
    assert left.x_test.shape == (10, 96, 96)
    np.testing.assert_allclose(left.x_test[4], written["test"][0][4, 0] / 255.0, atol=1e-7)
    with pytest.raises(UserError, match="divide 96"):
        load_dataset("norb", tmp_path, size=7)
    with pytest.raises(UserError, match="unknown --data-option"):
        load_dataset("norb", tmp_path, colour=True)


def test_norb_refuses_a_gzipped_or_truncated_file(tmp_path):
    from ppl_dgm.data.papers_sets import NORB_FILES

    write_norb(tmp_path)
    path = tmp_path / NORB_FILES["x_test"]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="truncated"):
        load_dataset("norb", tmp_path)
    path.write_bytes(b"\x1f\x8b" + bytes(100))  # a gzip header
    with pytest.raises(UserError, match="un-gzip"):
        load_dataset("norb", tmp_path)


def test_omniglot_reads_chardata_in_the_iwae_layout(tmp_path):
    """chardata.mat: data (784, N) columns, the IWAE code's pixel order (an image stored
    transposed, row-major), one-hot alphabets in target (50, N)."""
    rng = np.random.default_rng(2)
    images = {s: rng.random((n, 28, 28)) for s, n in (("train", 50), ("test", 7))}
    labels = {"train": np.arange(50) % 50, "test": np.array([3, 0, 49, 7, 7, 1, 2])}

    def columns(imgs):
        return np.stack([img.T.ravel() for img in imgs], axis=1)

    def one_hot(y):
        out = np.zeros((50, len(y)))
        out[y, np.arange(len(y))] = 1
        return out

    savemat(tmp_path / "chardata.mat", {
        "data": columns(images["train"]), "target": one_hot(labels["train"]),
        "testdata": columns(images["test"]), "testtarget": one_hot(labels["test"])})
    data = load_dataset("omniglot", tmp_path)
    assert data.x_train.shape == (50, 28, 28) and data.n_classes == 50
    np.testing.assert_allclose(data.x_test, images["test"], atol=1e-6)
    np.testing.assert_allclose(data.x_train[13], images["train"][13], atol=1e-6)
    assert data.y_test.tolist() == labels["test"].tolist()


@pytest.mark.parametrize("name, expected", [("svhn", "train_32x32.mat"), ("norb", "smallnorb-5x"),
                                            ("omniglot", "chardata.mat")])
def test_missing_data_says_where_it_looked_and_where_to_get_it(tmp_path, monkeypatch, name,
                                                                expected):
    monkeypatch.setenv("PPL_DGM_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as info:
        load_dataset(name)
    message = str(info.value)
    for place in (tmp_path / "env", tmp_path / "env" / name, tmp_path / "cache" / "ppl_dgm"):
        assert f"  - {place}\n" in message
    assert expected in message and "http" in message and "--data-dir" in message
    assert "never downloaded" in message
    # a folder named with --data-dir is the only place looked (never $PPL_DGM_DATA instead)
    (tmp_path / "given").mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_dataset(name, tmp_path / "given")
    message = str(info.value)
    for place in (tmp_path / "given", tmp_path / "given" / name):
        assert f"  - {place}\n" in message
    assert str(tmp_path / "env") not in message
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(name, tmp_path / "absent")


def test_cli_names_the_missing_data_set_in_one_line(tmp_path, capsys):
    from ppl_dgm.cli import main

    code = main(["train", "vae", "--dataset", "omniglot", "--data-dir", str(tmp_path),
                 "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code != 0
    err = capsys.readouterr().err
    assert err.startswith("ppl-dgm: error:") and "omniglot was not found" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
