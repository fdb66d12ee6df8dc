import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# One JAX compilation cache for the whole test session (inherited by the CLI subprocesses): the
# NumPyro tests build the same small programs many times, and XLA compilation dominates their time.
# It only reuses compiled executables (the key covers the program, shapes and flags).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JAX_CACHE = tempfile.mkdtemp(prefix="ppl_dgm_test_jax_cache_")
    atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_JAX_CACHE,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
# ... and XLA's cheap compilation for the tiny test programs (set before JAX starts; a test that
# sets XLA_FLAGS itself, e.g. to force several host devices, keeps its own).
_FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_XLA}".strip()

# ... and one thread in XLA's CPU pool (it would otherwise take every core: ppl_dgm.threads), so that
# test processes side by side (pytest -n 2) do not oversubscribe the cores.
try:
    from ppl_dgm.threads import start_xla

    start_xla(1)
except ImportError:  # the jax extra is not installed: the NumPyro tests skip themselves
    pass

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
