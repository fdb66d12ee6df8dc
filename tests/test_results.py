"""Run records: strict JSON that any reader parses."""

import json
import math

import numpy as np

from ppl_dgm import results


def test_write_json_is_strict_json(tmp_path):
    path = tmp_path / "record.json"
    results.write_json(path, {"k": float("inf"), "nan": np.float32("nan"), "ok": np.float64(1.5),
                              "arr": np.array([1.0, -np.inf]), "nested": [{"x": -math.inf}, 3]})
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    loaded = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert loaded == {"k": None, "nan": None, "ok": 1.5, "arr": [1.0, None],
                      "nested": [{"x": None}, 3]}
