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
# The user's data folder, read once before any test runs (the fixture below clears the variable):
# only mnist_dir() consults it, to find the real MNIST for the tests that are marked to need it.
_USER_DATA = os.environ.get("PPL_DGM_DATA")


def _user_settings() -> list[str]:
    """The variables of the user's environment that change where ppl-dgm reads and writes, or how
    it reports errors: every ``PPL_DGM_*`` (``PPL_DGM_DATA``, ``PPL_DGM_CACHE``, ``PPL_DGM_DEBUG``,
    ...) and ``XDG_CACHE_HOME``."""
    return sorted(name for name in os.environ
                  if name.startswith("PPL_DGM_") or name == "XDG_CACHE_HOME")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch, tmp_path_factory):
    """Tests do not depend on the user's environment: every ``PPL_DGM_*`` and ``XDG_CACHE_HOME``
    variable is cleared, and the user cache (``ppl_dgm.data.mnist.cache_dir``) is an empty folder
    of the test's own, never ``~/.cache/ppl_dgm``. A test sets what it needs with monkeypatch."""
    for name in _user_settings():
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
    yield


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    yield


def mnist_dir() -> Path | None:
    """The folder of the real ``mnist.npz``: the user's ``$PPL_DGM_DATA`` (as it was when the tests
    started), else ``../shared/data`` next to the repository; None when neither has it."""
    for candidate in (_USER_DATA, SHARED_DATA):
        if candidate and (Path(candidate) / "mnist.npz").is_file():
            return Path(candidate)
    return None
