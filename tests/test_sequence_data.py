"""The cluttered MNIST sequence generator: shapes, value range, digit places, seeds, cache."""

import numpy as np
import pytest

from ppl_dgm.data import load_dataset
from ppl_dgm.data.sequence import (
    build_mnist_sequence,
    cache_name,
    make_sequences,
    validation_size,
)
from tests.conftest import mnist_dir

DIGIT = 28


def synthetic_images(m: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 "digits" whose label is their index, so a label tells which image was used."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(m, DIGIT, DIGIT), dtype=np.uint8)
    images[rng.random(images.shape) < 0.6] = 0  # sparse, like MNIST
    return images, np.arange(m)


def paint_by_hand(images, labels_used, top_left, canvas):
    """The expected canvases without clutter, one digit at a time."""
    out = np.zeros((len(labels_used), canvas, canvas), dtype=np.uint8)
    for i, (digits, places) in enumerate(zip(labels_used, top_left, strict=True)):
        for d, (r, c) in zip(digits, places, strict=True):
            out[i, r:r + DIGIT, c:c + DIGIT] = images[d]
    return out


def test_shapes_dtypes_and_places():
    images, labels = synthetic_images()
    s = make_sequences(images, labels, 40, n_digits=3, n_clutter=8, rng=np.random.default_rng(1))
    assert s.x.shape == (40, 100, 100) and s.x.dtype == np.uint8
    assert s.y.shape == (40, 3) and s.y.dtype == np.int64
    assert s.top_left.shape == (40, 3, 2)
    top, left = s.top_left[..., 0], s.top_left[..., 1]
    # rows: inside the canvas; columns: side by side, the row of digits centred +- base = 8
    assert top.min() >= 0 and top.max() <= 100 - DIGIT
    assert left[:, 0].min() >= 0 and left[:, 0].max() < 2 * ((100 - 3 * DIGIT) // 2)
    np.testing.assert_array_equal(np.diff(left, axis=1), DIGIT)
    # the vertical start varies: digits are not all on one line
    assert len(np.unique(top)) > 10


def test_without_clutter_the_canvas_is_exactly_the_digits_at_their_places():
    images, labels = synthetic_images()
    s = make_sequences(images, labels, 30, n_digits=3, n_clutter=0, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(s.x, paint_by_hand(images, s.y, s.top_left, 100))


def test_clutter_is_added_and_clipped():
    images, labels = synthetic_images()
    rng = np.random.default_rng(3)
    s = make_sequences(images, labels, 30, n_digits=3, n_clutter=8, rng=rng)
    digits = paint_by_hand(images, s.y, s.top_left, 100)
    assert (s.x >= digits).all()  # clip(clutter + digits) never falls below the digits
    outside = digits == 0
    extra = (s.x > 0) & outside
    assert extra.any()  # clutter exists
    # at most 8 patches of 9 x 9 outside the digits, per canvas
    assert extra.reshape(30, -1).sum(1).max() <= 8 * 81
    # clipping: some pixels under a digit saturate (bright digit + bright clutter)
    assert s.x.max() == 255


def test_fewer_digits_and_other_canvas_sizes():
    images, labels = synthetic_images()
    s = make_sequences(images, labels, 5, n_digits=2, n_clutter=3, canvas=60,
                       rng=np.random.default_rng(4))
    assert s.x.shape == (5, 60, 60) and s.y.shape == (5, 2)
    with pytest.raises(ValueError):
        make_sequences(images, labels, 5, n_digits=3, canvas=60)


def test_same_seed_same_data_other_seed_other_data():
    images, labels = synthetic_images(m=600)
    mnist = {"x_train": images, "y_train": labels, "x_test": images[:100], "y_test": labels[:100]}
    a = build_mnist_sequence(mnist, n_train=120, n_test=20, seed=5)
    b = build_mnist_sequence(mnist, n_train=120, n_test=20, seed=5)
    c = build_mnist_sequence(mnist, n_train=120, n_test=20, seed=6)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["x_train"], c["x_train"])


def test_validation_canvases_come_from_the_validation_images():
    images, labels = synthetic_images(m=600)  # label = image index
    mnist = {"x_train": images, "y_train": labels, "x_test": images[:100], "y_test": labels[:100]}
    arrays = build_mnist_sequence(mnist, n_train=120, n_test=20, seed=0)
    n_val = validation_size(120)
    assert n_val == 12 and validation_size(60_000) == 10_000
    assert arrays["y_train"][:-n_val].max() < 500  # the first 5/6 of the images
    assert arrays["y_train"][-n_val:].min() >= 500  # the last 1/6 (MNIST: 50,000..59,999)
    assert arrays["x_test"].shape == (20, 100, 100)


@pytest.mark.skipif(mnist_dir() is None, reason="the shared MNIST file is not next to the repo")
def test_loader_returns_float_canvases_and_caches_them(tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_DGM_DATA", str(mnist_dir()))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    options = dict(n_train=60, n_test=15, seed=3)
    (tmp_path / "data").mkdir()  # a named data folder must exist, and is the one read
    (tmp_path / "data" / "mnist.npz").symlink_to(mnist_dir() / "mnist.npz")
    data = load_dataset("mnist-sequence", tmp_path / "data", **options)
    assert data.name == "mnist-sequence" and data.n_classes == 10
    assert data.x_train.shape == (60, 100, 100) and data.x_test.shape == (15, 100, 100)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.y_train.shape == (60, 3) and data.y_test.shape == (15, 3)
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    assert data.x_train.max() == 1.0  # clipped sums reach the top of the range
    assert set(np.unique(data.y_train)) <= set(range(10))
    # cached in the user cache under a name keyed by the options; the data folder is not written
    name = cache_name(3, 8, 100, 9, 60, 15, 3)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["mnist.npz"]
    assert [p.name for p in (tmp_path / "cache" / "ppl_dgm").iterdir()] == [name]
    again = load_dataset("mnist-sequence", tmp_path / "data", **options)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    fresh = load_dataset("mnist-sequence", tmp_path / "data", cache=False, **options)
    np.testing.assert_array_equal(fresh.x_test, data.x_test)
    # the digits sit where the generator says: canvases match the MNIST digits there
    with np.load(tmp_path / "cache" / "ppl_dgm" / name) as f:
        pos = f["pos_test"]
    from ppl_dgm.data.mnist import load_mnist

    mnist = load_mnist(mnist_dir())
    for i in range(3):
        for t in range(3):
            r, c = pos[i, t]
            patch = data.x_test[i, r:r + DIGIT, c:c + DIGIT]
            # some MNIST test image of the stated label lies under the clutter there
            candidates = mnist["x_test"][mnist["y_test"] == data.y_test[i, t]] / 255.0
            assert (patch[None] >= candidates - 1e-6).all(axis=(1, 2)).any()


def test_read_only_data_folder_is_left_alone(tmp_path, monkeypatch):
    from ppl_dgm.data.sequence import load_mnist_sequence

    images, labels = synthetic_images(m=120)
    source = tmp_path / "ro"
    source.mkdir()
    np.savez(source / "mnist.npz", x_train=images, y_train=labels % 10, x_test=images[:30],
             y_test=labels[:30] % 10)
    source.chmod(0o555)
    monkeypatch.delenv("PPL_DGM_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    try:
        data = load_mnist_sequence(source, n_train=40, n_test=10, seed=1)
        assert sorted(p.name for p in source.iterdir()) == ["mnist.npz"]
        cached = tmp_path / "cache" / "ppl_dgm" / cache_name(3, 8, 100, 9, 40, 10, 1)
        assert cached.is_file()
        with np.load(cached) as f:
            np.testing.assert_array_equal(f["x_train"] / np.float32(255), data.x_train)
    finally:
        source.chmod(0o755)
