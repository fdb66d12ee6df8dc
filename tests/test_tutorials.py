"""Every tutorial runs end to end on its quick budget (each defines ``main(quick: bool)``), and
what it demonstrates holds."""

import importlib.util
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.py"))


def check_m2_digits(out: dict) -> None:
    (enum_mean, enum_std), (trace_mean, trace_std) = out["estimates"].values()
    # same bound: the means agree within the Monte Carlo error, the exact sum has less variance
    assert abs(enum_mean - trace_mean) < 4 * (trace_std / 20**0.5) + 4 * (enum_std / 20**0.5)
    assert enum_std < trace_std


def check_rnn_spn_sequences(out: dict) -> None:
    # the ELBO of the empty-guide program is minus the summed cross-entropy computed by hand
    assert abs(out["loss"] - out["by_hand"]) < 1e-4 * abs(out["by_hand"])
    # identity initialisation: the steps' glimpses coincide and equal a bilinear resize
    assert out["glimpses_equal_at_init"] and out["identity_error"] < 1e-4
    assert out["figure"].is_file() and out["steps"] == 3


CHECKS = {"m2_digits": check_m2_digits, "rnn_spn_sequences": check_rnn_spn_sequences}


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(quick=True)
    assert path.stem in CHECKS, f"add a check of what {path.name} demonstrates"
    CHECKS[path.stem](out)
