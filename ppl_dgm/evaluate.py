"""Evaluation of a finished run of either backend: test error, IW log-likelihood with Pareto-k,
sample grids.

The backend is read from the run's ``config.json`` (``"backend"``, ``pyro`` when absent) and only
that backend is imported: a NumPyro run is evaluated without torch, a Pyro run without JAX. Both
backends write the same records (:func:`iw_record`, :func:`write_evaluation`): ``evaluation.json``,
and its figures under ``"evaluation"`` in ``summary.json``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ppl_dgm import results
from ppl_dgm.errors import UserError
from ppl_dgm.infer.psis import pareto_k

BACKENDS = ("pyro", "numpyro")
#: ``estimate(start, stop) -> (log-likelihoods (stop - start,), log-weights (K, stop - start))``
IWEstimate = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


def run_backend(run_dir: str | Path) -> str:
    """The backend a run was trained with (``config.json``'s ``backend``; ``pyro`` if absent)."""
    path = Path(run_dir) / results.CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {results.CONFIG})")
    backend = results.read_json(path).get("backend", "pyro")
    if backend not in BACKENDS:
        raise ValueError(f"{path}: unknown backend {backend!r} (expected one of {BACKENDS})")
    return backend


def _load_numpyro_run(run_dir: Path, device: str) -> Any:
    """``ppl_dgm.training.numpyro_loop.load_run``, with a clear error when JAX is not installed."""
    try:
        from ppl_dgm.training.numpyro_loop import load_run
    except ImportError as err:
        raise RuntimeError(f"{run_dir} was trained with the NumPyro backend, which needs the jax "
                           f"extra (pip install -e '.[jax]'): {err}") from err
    return load_run(run_dir, device)


# ------------------------------------------------------------------------------------- records
def iw_record(estimate: IWEstimate, n_points: int, iw_samples: int, batch_size: int,
              mean_elbo: Callable[[], float], progress: bool = True,
              per_example: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The log-likelihood figures of ``evaluation.json`` (either backend).

    ``estimate`` gives the per-point IW estimates and log-weights of the test points
    ``[start, stop)``; it is called on batches of ``batch_size`` points. Pareto-k (PSIS) is
    computed from the log-weights when ``iw_samples >= 10``; ``mean_elbo()`` gives the ELBO on the
    same points (not counted in ``iw_seconds``). A ``per_example`` dict receives the per-point
    estimates (``log_likelihood``) and Pareto-k values (``pareto_k``), in test-set order.
    """
    started = time.perf_counter()
    lls, ks = [], []
    for start in tqdm(range(0, n_points, batch_size), disable=not progress,
                      desc=f"IW-{iw_samples} log-likelihood"):
        ll, log_w = estimate(start, min(start + batch_size, n_points))
        lls.append(np.asarray(ll, dtype=np.float64))
        if iw_samples >= 10:
            ks.append(pareto_k(log_w))
    seconds = time.perf_counter() - started
    ll = np.concatenate(lls)
    record: dict[str, Any] = {
        "test_log_likelihood": float(ll.mean()),
        "test_log_likelihood_sem": float(ll.std(ddof=1) / np.sqrt(len(ll))) if len(ll) > 1
        else None,
        "n_test_evaluated": len(ll), "test_binarization_seed": 0,
        "iw_seconds": seconds, "iw_points_per_second": len(ll) / seconds,
        "test_elbo": mean_elbo(),
    }
    if ks:
        k = np.concatenate(ks)
        record["pareto_k_mean"] = float(k.mean())
        record["pareto_k_max"] = float(k.max())
        record["pareto_k_fraction_above_0.7"] = float((k > 0.7).mean())
    if per_example is not None:
        per_example["log_likelihood"] = ll
        if ks:
            per_example["pareto_k"] = np.concatenate(ks)
    return record


#: Per-example IW estimates of the last evaluation (netCDF): paired comparisons between runs
#: evaluated on the same test points (``benchmarks/paired_report.py``).
PER_EXAMPLE = "iw_per_example.nc"


def write_per_example(run_dir: Path, per_example: dict[str, np.ndarray],
                      attrs: dict[str, Any]) -> str:
    """``RUN_DIR/iw_per_example.nc``: variables over ``test_index`` (0..N-1 of the test set)."""
    import xarray as xr

    n = len(per_example["log_likelihood"])
    ds = xr.Dataset({k: ("test_index", np.asarray(v, np.float64)) for k, v in per_example.items()},
                    coords={"test_index": np.arange(n)},
                    attrs={k: v for k, v in attrs.items() if isinstance(v, (int, float, str))})
    results.atomic_write(run_dir / PER_EXAMPLE, lambda tmp: ds.to_netcdf(tmp))
    return PER_EXAMPLE


def write_evaluation(run_dir: str | Path, record: dict[str, Any], device: str) -> dict[str, Any]:
    """Add the environment to ``record``, write ``evaluation.json`` and copy it into the summary.

    Returns the record as written. ``summary.json`` (if present) gets it under ``"evaluation"``,
    without the library versions.
    """
    run_dir = Path(run_dir)
    record = {**record, **results.environment(device)}
    results.write_json(run_dir / results.EVALUATION, record)
    summary_path = run_dir / results.SUMMARY
    if summary_path.is_file():
        summary = results.read_json(summary_path)
        summary["evaluation"] = {k: v for k, v in record.items() if k != "versions"}
        results.write_json(summary_path, summary)
    return record


# ------------------------------------------------------------------------------------- evaluation
#: The largest seed every backend takes (``pyro.set_rng_seed`` seeds numpy's legacy generator,
#: which takes [0, 2**32)).
MAX_SEED = 2**32 - 1


def check_seed(seed: int) -> int:
    """``seed`` if it is a whole number in [0, 2**32), else :class:`UserError` naming ``--seed``
    (not numpy's text)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed must be a whole number in [0, 2**32), got {seed!r}", "e.g. --seed 0")
    return seed


def check_evaluation_options(iw_samples: int = 0, chunk_size: int = 1, subset: int | None = None,
                             classify_samples: int | None = None, seed: int = 0,
                             batch_size: int = 1, bn_stats: str = "running") -> None:
    """The options of :func:`evaluate_run`, each refused with :class:`UserError` naming its flag
    (before the run is loaded): ``--iw-samples`` >= 0, ``--chunk-size`` >= 1, ``--subset`` >= 1,
    ``--classify-samples`` >= 1 (as ``train`` requires), ``--seed`` in [0, 2**32), ``--bn-stats``
    running or train."""
    from ppl_dgm.infer.batch_norm_stats import check_bn_stats

    check_bn_stats(bn_stats)
    for flag, value, low in (("--iw-samples", iw_samples, 0), ("--chunk-size", chunk_size, 1),
                             ("--subset", subset, 1), ("--classify-samples", classify_samples, 1),
                             ("batch_size", batch_size, 1)):
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UserError(f"{flag} must be a whole number >= {low}, got {value!r}",
                            f"e.g. {flag} {max(low, 1)}" if flag.startswith("--") else None)
    check_seed(seed)


#: The fraction of test points with Pareto-k above 0.7 above which :func:`pareto_caution` speaks.
PARETO_CAUTION_FRACTION = 0.1


def pareto_caution(record: dict[str, Any]) -> str | None:
    """In words, when more than :data:`PARETO_CAUTION_FRACTION` of the points have Pareto-k > 0.7:
    their importance weights are too heavy-tailed for the estimate to have converged, so the
    log-likelihood is a loose lower bound (more ``--iw-samples`` tighten it); else None."""
    fraction = record.get("pareto_k_fraction_above_0.7")
    if fraction is None or fraction <= PARETO_CAUTION_FRACTION:
        return None
    return (f"caution: {fraction:.0%} of the test points have Pareto-k > 0.7: their importance "
            "weights are too heavy-tailed for the estimate to converge, so "
            f"test_log_likelihood {record['test_log_likelihood']:.2f} is a loose lower bound "
            "(the true value is higher; more --iw-samples tighten it, and comparisons between runs "
            "are unreliable)")


def evaluate_run(run_dir: str | Path, iw_samples: int = 5000, chunk_size: int = 500,
                 subset: int | None = None, classify_samples: int | None = None,
                 device: str = "auto", seed: int = 0, batch_size: int = 100,
                 progress: bool = True, bn_stats: str = "running") -> dict[str, Any]:
    """Evaluate ``run_dir`` (Pyro or NumPyro); writes ``evaluation.json`` (with ``epochs``, the
    epochs of the checkpoint evaluated) and adds its figures to ``summary.json``.

    The log-likelihood is the IWAE estimate with ``iw_samples`` particles (in chunks of
    ``chunk_size``) on the statically binarised test set (first ``subset`` points if given), with
    the PSIS Pareto-k diagnostic of each point's importance weights (k > 0.7: the estimate for that
    point is unreliable). ``seed`` seeds the particles (``pyro.set_rng_seed`` for Pyro runs,
    ``jax.random.PRNGKey`` for NumPyro runs). ``bn_stats`` says which batch-norm statistics every
    figure uses: ``"running"`` (default) the running averages kept in training, ``"train"`` those of
    one training-mode pass over the run's training images as one batch, binarised once with
    ``seed`` (the LVAE authors' evaluation; :mod:`ppl_dgm.infer.batch_norm_stats`; the checkpoint
    is not changed). It holds the run directory's lock
    (:class:`ppl_dgm.rundir.RunLock`) while it reads and writes: a run being trained (or evaluated)
    by another process is refused with one line naming that process.
    """
    check_evaluation_options(iw_samples=iw_samples, chunk_size=chunk_size, subset=subset,
                             classify_samples=classify_samples, seed=seed, batch_size=batch_size,
                             bn_stats=bn_stats)
    from ppl_dgm.rundir import RunLock

    run_dir = Path(run_dir)
    evaluate = _evaluate_numpyro if run_backend(run_dir) == "numpyro" else _evaluate_pyro
    per_example: dict[str, np.ndarray] = {}
    with RunLock(run_dir, "evaluating"):
        record, device_name = evaluate(run_dir, iw_samples=iw_samples, chunk_size=chunk_size,
                                       subset=subset, classify_samples=classify_samples,
                                       device=device, seed=seed, batch_size=batch_size,
                                       progress=progress, per_example=per_example,
                                       bn_stats=bn_stats)
        if per_example:
            record["per_example_file"] = write_per_example(run_dir, per_example, record)
        return write_evaluation(run_dir, record, device_name)


def no_batch_norm_error(run_dir: Path) -> UserError:
    """A run without batch norm evaluated with ``--bn-stats train``: one line naming the run."""
    from ppl_dgm.infer.batch_norm_stats import no_batch_norm

    return no_batch_norm(str(run_dir))


def training_points(trainer: Any, seed: int, run_dir: Path) -> np.ndarray:
    """The run's training images (the unlabelled pool of a semi-supervised run), flattened and
    binarised once with ``seed``: the points of ``--bn-stats train``. Refuses a classifier."""
    from ppl_dgm.data import binarize_static

    if trainer.task == "supervised":
        raise UserError(f"--bn-stats train passes training images through a generative pair; "
                        f"{trainer.config.model} ({run_dir}) is a classifier", "omit --bn-stats")
    n_train = trainer.info.n_train
    x = np.asarray(trainer.data.x_train[:n_train], np.float32).reshape(n_train, -1)
    if trainer.task == "semi-supervised":
        x = x[np.asarray(trainer.split.unlabelled)]
    return binarize_static(x, seed)


def _first_record(backend: str, trainer: Any, iw_samples: int, seed: int,
                  classify_samples: int | None, bn_stats: str) -> dict[str, Any]:
    """The evaluation record's settings (either backend); ``classify_samples`` (ADGM/SDGM: draws of
    a averaged per prediction; unset: the run's own) is set on the trainer."""
    if classify_samples is not None:
        trainer.config.classify_samples = classify_samples
    return {"backend": backend, "epochs": trainer.epoch, "iw_samples": iw_samples,
            "evaluation_seed": seed, "classify_samples": trainer.config.classify_samples,
            "bn_stats": bn_stats}


def _label_figures(trainer: Any) -> dict[str, Any]:
    """The test figures of the labels (either backend). Semi-supervised and unsupervised pairs
    also have a likelihood (their IW weights come from any pair's model and guide traces);
    supervised pairs (the RNN-SPN) have their digit and sequence errors; a semi-supervised pair
    trained without labels (--labels 0) its clustering of the test images."""
    record: dict[str, Any] = {}
    if trainer.classifies:
        record["test_error"] = trainer.classification_error(trainer.x_test, trainer.y_test)
        if trainer.task == "supervised" and trainer.info.sequence_length > 1:
            record["test_sequence_error"] = trainer.sequence_error(trainer.x_test, trainer.y_test)
    if trainer.spec.task == "semi-supervised" and not trainer.classifies:
        record.update(trainer.clustering(trainer.predictions(trainer.x_test)))
    return record


def _evaluate_pyro(run_dir: Path, *, iw_samples: int, chunk_size: int, subset: int | None,
                   classify_samples: int | None, device: str, seed: int, batch_size: int,
                   progress: bool, per_example: dict | None = None,
                   bn_stats: str = "running") -> tuple[dict[str, Any], str]:
    import pyro

    from ppl_dgm.infer.importance import log_likelihood
    from ppl_dgm.training.loop import load_run

    trainer = load_run(run_dir, device)
    record = _first_record("pyro", trainer, iw_samples, seed, classify_samples, bn_stats)
    if bn_stats == "train":  # the running averages replaced in memory (not in the checkpoint)
        from ppl_dgm.infer.batch_norm_stats import pyro_training_pass

        x_train = training_points(trainer, seed, run_dir)
        try:
            layers = pyro_training_pass(trainer.pair, trainer._tensor(x_train), seed)
        except UserError:
            raise no_batch_norm_error(run_dir) from None
        record.update(bn_stats_points=len(x_train), bn_stats_layers=layers)
    pyro.set_rng_seed(seed)
    record.update(_label_figures(trainer))
    if trainer.task != "supervised" and iw_samples > 0:
        x = trainer.x_test_binary if subset is None else trainer.x_test_binary[:subset]

        def estimate(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            ll, log_w = log_likelihood(trainer.pair, x[start:stop], iw_samples, chunk_size,
                                       return_log_weights=True)
            return ll.cpu().numpy(), log_w.cpu().numpy()

        record.update(iw_record(estimate, len(x), iw_samples, batch_size,
                                lambda: trainer.mean_elbo(x), progress, per_example))
    return record, str(trainer.device)


def _evaluate_numpyro(run_dir: Path, *, iw_samples: int, chunk_size: int, subset: int | None,
                      classify_samples: int | None, device: str, seed: int, batch_size: int,
                      progress: bool, per_example: dict | None = None, bn_stats: str = "running"
                      ) -> tuple[dict[str, Any], str]:
    trainer = _load_numpyro_run(run_dir, device)
    import jax

    from ppl_dgm.infer.numpyro_importance import log_likelihood
    from ppl_dgm.training.numpyro_loop import device_name

    record = _first_record("numpyro", trainer, iw_samples, seed, classify_samples, bn_stats)
    if bn_stats == "train":  # the running averages replaced in memory (not in the checkpoint)
        from ppl_dgm.infer.batch_norm_stats import numpyro_training_pass

        x_train = training_points(trainer, seed, run_dir)
        try:
            states, layers = numpyro_training_pass(
                trainer.pair, trainer.params, trainer._array(x_train),
                jax.random.fold_in(jax.random.PRNGKey(seed), 1 << 23))
        except UserError:
            raise no_batch_norm_error(run_dir) from None
        state = trainer.svi_state
        trainer.svi_state = state._replace(mutable_state={**(state.mutable_state or {}), **states})
        record.update(bn_stats_points=len(x_train), bn_stats_layers=layers)
    record.update(_label_figures(trainer))
    if trainer.task != "supervised" and iw_samples > 0:
        x = trainer.x_test_binary if subset is None else trainer.x_test_binary[:subset]
        x_host = np.asarray(x, dtype=np.float32)
        params, key = trainer.params, jax.random.PRNGKey(seed)
        size = min(batch_size, len(x_host))

        def estimate(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            # every batch padded to ``size`` rows: one compilation for the whole test set
            batch = np.zeros((size, x_host.shape[1]), np.float32)
            batch[:stop - start] = x_host[start:stop]
            ll, log_w = log_likelihood(trainer.pair, params, jax.device_put(batch, trainer.device),
                                       jax.random.fold_in(key, start // size), iw_samples,
                                       chunk_size, return_log_weights=True)
            return np.asarray(ll[:stop - start]), np.asarray(log_w[:, :stop - start])

        record.update(iw_record(estimate, len(x_host), iw_samples, size,
                                lambda: trainer.mean_elbo(x), progress, per_example))
    return record, device_name(trainer.device)


# ------------------------------------------------------------------------------------- samples
@dataclass
class SampleSet:
    """Bernoulli means ``images`` of shape ``(rows, cols, *image_shape)``; ``by_class``: one row
    per class."""

    images: np.ndarray
    model: str
    by_class: bool


def _pyro_samples(run_dir: Path, per_class: int, device: str, seed: int) -> SampleSet:
    import torch

    from ppl_dgm.training.loop import load_run

    trainer = load_run(run_dir, device)
    torch.manual_seed(seed)
    # one row per value of y (per class, or per cluster of a run trained with --labels 0)
    by_class = trainer.spec.task == "semi-supervised"
    n_classes = getattr(trainer.pair.p, "n_classes", trainer.info.n_classes)
    with torch.no_grad():
        if by_class:
            y = torch.arange(n_classes, device=trainer.device).repeat_interleave(per_class)
            images = trainer.pair.sample_x(len(y), y)
        else:
            images = trainer.pair.sample_x(per_class * per_class)
    rows = n_classes if by_class else per_class
    images = images.reshape(rows, per_class, *trainer.info.image_shape).cpu().numpy()
    return SampleSet(images, trainer.config.model, by_class)


def _numpyro_samples(run_dir: Path, per_class: int, device: str, seed: int) -> SampleSet:
    trainer = _load_numpyro_run(run_dir, device)
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(seed)
    by_class = trainer.spec.task == "semi-supervised"  # one row per class or cluster
    n_classes = getattr(trainer.pair.model, "n_classes", trainer.info.n_classes)
    if by_class:
        y = jnp.repeat(jnp.arange(n_classes), per_class)
        images = trainer.pair.sample_x(trainer.params, key, len(y), y)
    else:
        images = trainer.pair.sample_x(trainer.params, key, per_class * per_class)
    rows = n_classes if by_class else per_class
    images = np.asarray(images).reshape(rows, per_class, *trainer.info.image_shape)
    return SampleSet(images, trainer.config.model, by_class)


#: The largest ``--per-class``: a grid of 100 columns (10,000 images for an unconditional model)
#: is already a figure 60 inches wide; ``--per-class 100000`` grew to 16 GiB and was killed.
MAX_PER_CLASS = 100


def sample_grid(run_dir: str | Path, output: str | Path | None = None, per_class: int = 10,
                device: str = "auto", seed: int = 0) -> Path:
    """A PNG grid (default ``RUN_DIR/samples.png``): one row per class for class-conditional
    models, else a square grid of ``per_class`` x ``per_class``; either backend.

    Writing into the run directory, it holds the directory's lock (:class:`ppl_dgm.rundir.RunLock`;
    a run being trained by another process is refused with one line naming it); an ``output``
    elsewhere only reads the checkpoint (replaced atomically by a training), so it takes no lock."""
    if not isinstance(per_class, int) or isinstance(per_class, bool) or not (
            1 <= per_class <= MAX_PER_CLASS):
        raise UserError(f"--per-class must be a whole number in [1, {MAX_PER_CLASS}], got "
                        f"{per_class!r} (the grid is drawn in memory, one figure)",
                        "e.g. --per-class 10; for many samples, call the pair's sample_x in batches")
    check_seed(seed)
    run_dir = Path(run_dir)
    output = Path(output or run_dir / "samples.png")
    if output.is_dir():
        raise UserError(f"--output {output} is a directory",
                        f"give a file name, e.g. --output {output / 'samples.png'}")
    backend = run_backend(run_dir)
    config = results.read_json(run_dir / results.CONFIG)
    if config.get("model"):
        from ppl_dgm import registry

        try:
            task = registry.resolve_spec(config["model"], backend, config.get("source")).task
        except KeyError:
            task = None
        if task == "supervised":
            raise UserError(f"{config['model']} is a classifier (p(y | x)): it has no images to "
                            "sample", "sample a generative run (m2, adgm, sdgm, vae, lvae)")
    draw = _numpyro_samples if backend == "numpyro" else _pyro_samples
    from ppl_dgm.rundir import RunLock

    inside = run_dir.resolve() in output.resolve().parents
    with RunLock(run_dir, "sampling") if inside else contextlib.nullcontext():
        try:
            samples = draw(run_dir, per_class, device, seed)
        except TypeError as err:
            if "cannot sample" not in str(err):
                raise
            raise UserError(f"the model of {run_dir} cannot sample images ({err})",
                            "sample a run of a generative model") from err
        return save_grid(samples, output)


def save_grid(samples: SampleSet, output: Path) -> Path:
    """Write ``samples`` as one grey-scale PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = samples.images.shape[:2]
    from ppl_dgm.plots import grid_image

    # cells separated by white gaps so that small samples stay readable
    canvas = grid_image(samples.images.reshape(rows * cols, *samples.images.shape[2:]), nrow=cols)
    fig, ax = plt.subplots(figsize=(cols * 0.6, rows * 0.6))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    title = f"{samples.model}: samples"
    ax.set_title(title + (" (one row per class)" if samples.by_class else ""))
    results.atomic_write(output, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    plt.close(fig)
    return output
