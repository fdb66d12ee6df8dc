"""CPU threads of a run: ``--threads N`` for torch (intra-op threads, OpenMP/MKL) and XLA.

Backend-neutral: importing it imports neither torch nor JAX. :func:`apply_threads` sets the
environment variables the libraries read when they start (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``
and, for XLA's CPU client, ``XLA_FLAGS``) and, when torch is already imported, calls
``torch.set_num_threads``. XLA reads ``XLA_FLAGS`` once, when JAX creates its first backend, so it
has to run before that (the CLI calls it before importing a trainer).

``0`` means the libraries' own default (every core). Without ``--threads`` a run takes
``$OMP_NUM_THREADS`` when it is set, else 1: one thread per job is the safe choice on a machine
shared with other jobs and for sweep workers (one job per core, one thread each).
"""

from __future__ import annotations

import os
import sys
import warnings

from ppl_dgm.errors import UserError

# the XLA flags that make XLA's CPU client single-threaded (its Eigen pool and the intra-op pool)
SINGLE_THREAD_XLA = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")


def default_threads() -> int:
    """``$OMP_NUM_THREADS`` when it is set to a whole number >= 0, else 1."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() else 1


#: The most threads ``--threads`` takes: far above any machine's cores, far below what exhausts the
#: memory of thread stacks (``--threads 100000`` ended in an empty MemoryError).
MAX_THREADS = 1024


def validate_threads(threads: int) -> int:
    """``threads`` if it is a whole number in [0, :data:`MAX_THREADS`], else
    :class:`~ppl_dgm.errors.UserError` (a ``ValueError``) naming ``--threads``."""
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise UserError(f"--threads must be a whole number >= 0 (0: every core), got {threads!r}",
                        "e.g. --threads 1")
    if threads > MAX_THREADS:
        cores = os.cpu_count() or 1
        raise UserError(f"--threads {threads} is more than {MAX_THREADS} (this machine has {cores} "
                        "CPUs)", f"use at most the cores you have, e.g. --threads {cores}, or 0 for "
                        "every core")
    return threads


def _xla_flags(current: str, threads: int) -> str:
    """``current`` without its thread flags, plus the single-thread flags when ``threads == 1``.

    Other flags (``--xla_force_host_platform_device_count=2``, ...) are kept. XLA has no flag for
    a pool of N > 1 threads: it then sizes its pools itself (every core).
    """
    keys = {flag.split("=")[0] for flag in SINGLE_THREAD_XLA}
    kept = [flag for flag in current.split() if flag.split("=")[0] not in keys]
    if threads == 1:
        kept += list(SINGLE_THREAD_XLA)
    return " ".join(kept)


def thread_environment(threads: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) with the variables that give a process started
    with it ``threads`` CPU threads (0: the libraries' default)."""
    validate_threads(threads)
    env = dict(os.environ if environ is None else environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if threads > 0:
            env[key] = str(threads)
        else:
            env.pop(key, None)
    flags = _xla_flags(env.get("XLA_FLAGS", ""), threads)
    if flags:
        env["XLA_FLAGS"] = flags
    else:
        env.pop("XLA_FLAGS", None)
    return env


def apply_threads(threads: int) -> int:
    """Use ``threads`` CPU threads (0: the libraries' default) in this process and its children.

    Returns ``threads``. Warns when JAX has already created its CPU backend (the XLA flags then only
    reach child processes).
    """
    env = thread_environment(threads)
    if env.get("XLA_FLAGS") != os.environ.get("XLA_FLAGS") and _jax_started():
        warnings.warn("JAX has already started: --threads reaches torch but not XLA in this process",
                      stacklevel=2)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS"):
        if key in env:
            os.environ[key] = env[key]
        else:
            os.environ.pop(key, None)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads if threads > 0 else (os.cpu_count() or 1))
    return threads


def start_xla(threads: int) -> None:
    """Create JAX's CPU backend now, its thread pool sized for ``threads`` (0: leave it to XLA).

    XLA's CPU client runs the independent operations of a program concurrently on a pool of threads
    (``tf_XLAEigen``) even with ``--xla_cpu_multi_thread_eigen=false``, and sizes that pool by the
    CPUs the process may use when the client is created: measured, a ``--threads 1`` NumPyro run kept
    two cores busy. So for ``threads`` below the CPUs available the creating thread is confined to
    ``threads`` of them while the client starts, then every thread of the process gets the full set
    back (the pool keeps its size; the OS still places its threads on any core). Does nothing when
    JAX has already created a backend, and on systems without ``sched_setaffinity``.
    """
    if threads <= 0 or _jax_started() or not hasattr(os, "sched_setaffinity"):
        return
    full = os.sched_getaffinity(0)
    if threads >= len(full):
        return
    os.sched_setaffinity(0, set(sorted(full)[:threads]))
    try:
        import jax

        jax.devices("cpu")  # creates the CPU client and its pool
    finally:
        for task in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else [0]:
            try:
                os.sched_setaffinity(int(task), full)
            except OSError:  # a thread that has ended
                pass


def xla_pool_threads() -> int | None:
    """The threads of XLA's CPU pool in this process (Linux ``/proc``; ``None`` elsewhere)."""
    tasks = "/proc/self/task"
    if not os.path.isdir(tasks):
        return None
    count = 0
    for task in os.listdir(tasks):
        try:
            with open(os.path.join(tasks, task, "comm")) as f:
                count += "XLAEigen" in f.read()
        except OSError:
            continue
    return count


def _jax_started() -> bool:
    """Whether JAX has created a backend (after which XLA_FLAGS is no longer read)."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


def threads_in_use() -> dict[str, object]:
    """What this process runs with: torch's intra-op threads (if torch is loaded) and the XLA flags."""
    torch = sys.modules.get("torch")
    return {"torch_threads": torch.get_num_threads() if torch is not None else None,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "xla_flags": os.environ.get("XLA_FLAGS"),
            "xla_pool_threads": xla_pool_threads() if _jax_started() else None}
