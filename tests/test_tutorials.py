"""Every tutorial runs end to end on its quick budget (each defines ``main(quick: bool)``)."""

import importlib.util
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.py"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(quick=True)


def test_m2_tutorial_estimators_agree():
    spec = importlib.util.spec_from_file_location("m2_digits", TUTORIALS[0].parent / "m2_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(quick=True)
    (enum_mean, enum_std), (trace_mean, trace_std) = out["estimates"].values()
    # same bound: the means agree within the Monte Carlo error, the exact sum has less variance
    assert abs(enum_mean - trace_mean) < 4 * (trace_std / 20**0.5) + 4 * (enum_std / 20**0.5)
    assert enum_std < trace_std
