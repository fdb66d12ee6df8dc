import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    yield


def mnist_dir() -> Path | None:
    for candidate in (os.environ.get("PPL_DGM_DATA"), SHARED_DATA):
        if candidate and (Path(candidate) / "mnist.npz").is_file():
            return Path(candidate)
    return None
