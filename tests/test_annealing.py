import pytest

from ppl_dgm.infer.annealing import LinearWarmup


def test_linear_warmup():
    w = LinearWarmup(warmup_steps=4)
    assert [w(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert LinearWarmup(0)(0) == 1.0
    assert LinearWarmup(10, start=0.5)(4) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        LinearWarmup(-1)
