"""Property-based tests: malformed arrays, labels, hyperparameters and option values meet only the
documented errors (one line, exit status 2), never a traceback, and never an exit 0.

Each property compares the code with an independent statement of the domain (the predicates
below), not with the code's own validation.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppl_dgm import api, cli, registry
from ppl_dgm.config import parse_value, resolve
from ppl_dgm.data import _from_arrays, load_dataset
from ppl_dgm.errors import EXIT_USAGE, UserError

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

DTYPES = st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_])
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4)


def arrays() -> st.SearchStrategy[np.ndarray]:
    return DTYPES.flatmap(lambda dtype: hnp.arrays(dtype, SHAPES))


# ------------------------------------------------------------------------------------- loaders
@SETTINGS
@given(x_train=arrays(), y_train=arrays(), x_test=arrays(), y_test=arrays())
def test_loader_accepts_only_well_formed_arrays(x_train, y_train, x_test, y_test):
    """Whatever four arrays an .npz holds, the loader returns a data set whose labels are the
    integers 0..K-1 and whose images are finite, in [0, 1] and of one shape -- or says why not."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prop.npz"
        np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        try:
            data = load_dataset(path)
        except UserError as err:
            assert "\n" not in str(err) and "prop" in str(err)
            return
    assert len(data.x_train) >= 1 and data.x_train.shape[1:] == data.x_test.shape[1:]
    for x in (data.x_train, data.x_test):
        assert x.dtype == np.float32 and np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    # the labels as given: whole, non-negative, every class 0..K-1 present in training
    for given_y, y in ((y_train, data.y_train), (y_test, data.y_test)):
        assert np.array_equal(np.asarray(given_y, dtype=np.float64), y.astype(np.float64))
        assert (y >= 0).all() and (y < data.n_classes).all()
    assert set(np.unique(data.y_train).tolist()) == set(range(data.n_classes))
    assert len(data.x_train) == len(data.y_train) and len(data.x_test) == len(data.y_test)


@SETTINGS
@given(labels=st.lists(st.one_of(st.integers(-3, 12), st.floats(-3, 12), st.just(float("nan"))),
                       min_size=1, max_size=12))
def test_labels_are_the_integers_0_to_k_minus_1(labels):
    y = np.asarray(labels)
    x = np.zeros((len(y), 2), np.float32)
    whole = bool(np.all(np.isfinite(y)) and np.all(y == np.round(y)))
    valid = whole and y.min() >= 0 and set(y.astype(int).tolist()) == set(range(int(y.max()) + 1))
    try:
        data = _from_arrays("labels", {"x_train": x, "y_train": y, "x_test": x, "y_test": y})
    except UserError:
        assert not valid, labels
        return
    assert valid, labels
    assert data.n_classes == int(y.max()) + 1


# ------------------------------------------------------------------------------------- options
# an independent statement of each option's domain
def _real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


DOMAINS = {
    "epochs": lambda v: _int(v) and v >= 1,
    "batch_size": lambda v: _int(v) and v >= 1,
    "num_particles": lambda v: _int(v) and v >= 1,
    "eval_batch_size": lambda v: _int(v) and v >= 1,
    "classify_samples": lambda v: _int(v) and v >= 1,
    "steps_per_epoch": lambda v: _int(v) and v >= 1,
    "seed": lambda v: _int(v) and 0 <= v < 2**32,
    "lr": lambda v: _real(v) and v > 0,
    "lr_decay": lambda v: _real(v) and 0 < v <= 1,
    "clip_norm": lambda v: _real(v) and v >= 0,
    "clip_value": lambda v: _real(v) and v >= 0,
    "alpha": lambda v: _real(v) and v >= 0,
    "free_bits": lambda v: _real(v) and v >= 0,
    "warmup_epochs": lambda v: _real(v) and v >= 0,
    "max_minutes": lambda v: _real(v) and v > 0,
}
VALUES = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=True, allow_infinity=True),
                   st.booleans(), st.text(max_size=4), st.lists(st.integers(), max_size=2))


@SETTINGS
@given(field=st.sampled_from(sorted(DOMAINS)), value=VALUES)
def test_configuration_accepts_exactly_its_domain(field, value):
    try:
        config = resolve(registry.get("m2"), {field: value})
    except UserError as err:
        assert not DOMAINS[field](value), (field, value)
        assert "\n" not in str(err)
        return
    assert DOMAINS[field](value), (field, value)
    assert getattr(config, field) == value


HPARAMS = {  # M2's networks: sizes, a list of sizes, a flag, a name
    "z_dim": lambda v: _int(v) and v >= 1,
    "hidden": lambda v: isinstance(v, list) and len(v) > 0 and all(_int(h) and h >= 1 for h in v),
    "batch_norm": lambda v: isinstance(v, bool),
    "activation": lambda v: isinstance(v, str),
}
SET_TEXT = st.one_of(st.text(max_size=8), st.integers(-5, 5).map(str),
                     st.lists(st.integers(-3, 600), max_size=3).map(str),
                     st.sampled_from(["[500,", "true", "null", "1.5", "[]", "[16, 0]", "\"x\""]))


@SETTINGS
@given(key=st.sampled_from(sorted(HPARAMS)), text=SET_TEXT)
def test_hyperparameters_accept_exactly_their_domain(key, text):
    value = parse_value(text)
    try:
        config = resolve(registry.get("m2"), {}, {key: value})
    except UserError:
        assert not HPARAMS[key](value), (key, text)
        return
    assert HPARAMS[key](value), (key, text)
    assert config.hparams[key] == value


# ------------------------------------------------------------------------------------- the CLI
class _Reached(Exception):
    """Raised if an invalid command line got as far as building a trainer."""


def _invalid_flags() -> st.SearchStrategy[list[str]]:
    sizes = st.sampled_from(["--epochs", "--batch-size", "--labelled-batch-size", "--num-particles",
                             "--eval-batch-size", "--classify-samples", "--steps-per-epoch"])
    non_negative = st.sampled_from(["--clip-norm", "--clip-value", "--alpha", "--free-bits",
                                    "--warmup-epochs", "--min-lr"])
    bad_real = st.one_of(st.floats(max_value=-1e-9), st.just(float("nan")), st.just(float("inf")))
    # "--flag=value": a negative value is the flag's value, not another option
    return st.one_of(
        st.tuples(sizes, st.integers(-10**6, 0).map(str)),
        st.tuples(non_negative, bad_real.map(repr)),
        st.tuples(st.sampled_from(["--lr", "--max-minutes"]),
                  st.one_of(st.floats(max_value=0), st.just(float("nan"))).map(repr)),
        st.tuples(st.just("--lr-decay"),
                  st.one_of(st.floats(max_value=0), st.floats(min_value=1.0001)).map(repr)),
        st.tuples(st.just("--seed"), st.one_of(st.integers(max_value=-1),
                                               st.integers(min_value=2**32)).map(str)),
        st.tuples(st.sampled_from(["--epochs", "--lr", "--seed", "--clip-norm"]),
                  st.text(alphabet="abcxyz,[]. ", min_size=1, max_size=6)),
        st.tuples(st.just("--set"), st.sampled_from(["z_dim=", "hidden=", "batch_norm="]).flatmap(
            lambda key: st.sampled_from(["0", "-1", "abc", "[500,", "[]", "[0]", "2.5", "null"]).map(
                lambda v: key + v))),
        st.tuples(st.just("--set"), st.text(alphabet="abz_=1", min_size=1, max_size=8).filter(
            lambda t: t.partition("=")[0] not in ("z_dim", "hidden", "activation", "batch_norm",
                                                   "alpha") or "=" not in t)),
        st.tuples(st.just("--data-option"), st.text(alphabet="ab=1", min_size=1, max_size=5)),
    ).map(lambda pair: [f"{pair[0]}={pair[1]}"])


@SETTINGS
@given(flags=_invalid_flags())
def test_invalid_command_lines_get_one_line_and_status_2(flags, tmp_path, capsys):
    out = tmp_path / "never"

    def no_training(*args, **kwargs):
        raise _Reached(f"an invalid command line was accepted: {flags}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(api, "trainer_class", lambda *a, **k: no_training)
        capsys.readouterr()
        try:
            code = cli.main(["train", "m2", "--out", str(out), "--device", "cpu", *flags])
        except SystemExit as exit_:  # argparse's own message (a value of the wrong type)
            code = exit_.code
        err = capsys.readouterr().err
    assert code == EXIT_USAGE, (flags, err)
    assert "Traceback" not in err and "_Reached" not in err
    assert [line for line in err.splitlines() if line.startswith(("ppl-dgm: error:", "usage:",
                                                                  "ppl-dgm train: error:"))]
    assert not out.exists()
