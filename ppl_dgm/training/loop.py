"""The training loop of the Pyro backend: SVI with torch optimisers, checkpoints and records.

One optimiser step per batch minimises the task's objective (``ppl_dgm.infer.objectives``) built on
a Pyro ELBO's ``differentiable_loss``. Everything the run depends on is in ``TrainConfig``; the run
directory receives ``config.json``, ``checkpoint.pt`` (each epoch, and at a SIGINT/SIGTERM in the
middle of one; atomically), ``history.nc`` and ``summary.json``. ``resume=True`` continues from the
checkpoint and gives the same result as an uninterrupted run (model, optimiser, schedule position,
RNG states, history and the position in an interrupted epoch are restored).

Data-parallel training is a wrapping of ``pair`` and of the batch sampler (e.g. through Lightning as
in Pyro's ``examples/svi_lightning.py``): the loss is an ordinary differentiable torch scalar.

The step statistics stay on the device and are read once per epoch; the only per-step read is the
finiteness guard of ``TrainConfig.finite_check="step"`` (the default on a CPU, where it waits for
no device), which ``"epoch"`` (the default on a GPU) moves to the end of the epoch.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import (
    ELBO,
    RenyiELBO,
    ReweightedWakeSleep,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)

from ppl_dgm import contract, registry, results
from ppl_dgm.config import TrainConfig
from ppl_dgm.data import binarize_static
from ppl_dgm.errors import UserError
from ppl_dgm.infer import objectives
from ppl_dgm.infer.annealing import LinearWarmup
from ppl_dgm.infer.diagnostics import active_units, site_kl
from ppl_dgm.infer.free_bits import free_bits_loss
from ppl_dgm.infer.importance import elbo_per_example
from ppl_dgm.pair import Pair
from ppl_dgm.spec import ModelSpec
from ppl_dgm.threads import apply_threads
from ppl_dgm.training.common import (  # noqa: F401  (re-exported: backend-neutral pieces)
    TEST_BINARIZATION_SEED,
    VALIDATION_SEED,
    DataInfo,
    EpochLoop,
    default_alpha,
    default_validation_size,
    prepare_data,
    training_task,
)

# a non-finite loss is reported once, by the trainer's divergence check (ppl_dgm.errors.DivergenceError)
warnings.filterwarnings("ignore", message="Encountered NaN")  # pyro.util.warn_if_nan


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name} was asked for but torch sees no CUDA device")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def build_pair(config: TrainConfig, info: DataInfo, spec: ModelSpec | None = None) -> Pair:
    """The pair of ``config.model`` (registered, or from ``config.source``: see
    :mod:`ppl_dgm.contract`), with alpha for semi-supervised pairs; checks the returned type."""
    spec = spec or registry.resolve_spec(config.model, config.backend, config.source)
    hparams = dict(config.hparams)
    if spec.task == "semi-supervised":
        hparams["alpha"] = config.alpha if config.alpha is not None else default_alpha(info)
    pair = spec.builder()(hparams, info)
    contract.check_built(pair, spec)
    return pair


def make_elbo(config: TrainConfig, pair: Pair) -> ELBO:
    """The Pyro ELBO named by ``config.elbo`` (particles vectorised when more than one)."""
    kwargs = dict(max_plate_nesting=pair.max_plate_nesting, num_particles=config.num_particles,
                  vectorize_particles=config.num_particles > 1)
    kinds = {"trace_enum": TraceEnum_ELBO, "trace": Trace_ELBO, "trace_graph": TraceGraph_ELBO,
             "trace_meanfield": TraceMeanField_ELBO}
    if config.elbo == "renyi":
        return RenyiELBO(alpha=config.renyi_alpha, **kwargs)
    if config.elbo == "rws":  # wake-theta + wake-phi (insomnia 1), particles vectorised
        return ReweightedWakeSleep(num_particles=config.num_particles, insomnia=1.0,
                                   max_plate_nesting=pair.max_plate_nesting,
                                   vectorize_particles=True)
    return kinds[config.elbo](**kwargs)


def check_objective(config: TrainConfig, pair: Pair, task: str, x: torch.Tensor) -> None:
    """Refuse (one ``UnsupportedObjective`` line) an objective that cannot train ``pair``; the
    guide is traced once on the points ``x`` (:func:`ppl_dgm.infer.objectives.pair_sites`)."""
    from ppl_dgm.infer.objective_names import check

    sites, latents = objectives.pair_sites(pair, x) if task != "supervised" else ([], [])
    check(config.elbo, backend="pyro", task=task, model=config.model, guide_sites=sites,
          model_latents=latents, num_particles=config.num_particles,
          renyi_alpha=config.renyi_alpha)


def make_optimizer(config: TrainConfig, params) -> tuple[torch.optim.Optimizer, Any]:
    if config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr, betas=config.adam_betas,
                               eps=getattr(config, "adam_eps", 1e-8))
    elif config.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=config.lr, alpha=config.rmsprop_alpha,
                                  eps=config.rmsprop_eps)
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}: use adam or rmsprop")
    floor = config.min_lr / config.lr

    def factor(epoch: int) -> float:
        if config.lr_decay_every <= 0:
            return 1.0
        return max(config.lr_decay ** (epoch // config.lr_decay_every), floor)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def clip_gradients(params: list[torch.Tensor], config: TrainConfig) -> torch.Tensor | None:
    """Clip the gradients of ``params`` in place: element-wise to [-clip_value, clip_value] and to
    global norm ``clip_norm`` (either may be off), in the order ``config.clip_order``. Returns the
    global norm that the norm clipping measured (``None`` when it is off)."""
    steps = [("value", config.clip_value), ("norm", config.clip_norm)]
    if getattr(config, "clip_order", "value_then_norm") == "norm_then_value":
        steps.reverse()
    norm = None
    for kind, bound in steps:
        if not bound:
            continue
        if kind == "value":
            torch.nn.utils.clip_grad_value_(params, bound)
        else:
            norm = torch.nn.utils.clip_grad_norm_(params, bound)
    return norm


def add_weight_prior(params: list[torch.Tensor], std: float, n_train: int) -> None:
    """Add the gradient of -log N(W; 0, std^2) / ``n_train`` (W / (std^2 N)) to the gradient of
    every weight matrix (two or more dimensions) in ``params``: ``TrainConfig.weight_prior_std``."""
    if std <= 0:
        return
    weights = [p for p in params if p.grad is not None and p.dim() >= 2]
    if weights:
        torch._foreach_add_([p.grad for p in weights], weights, alpha=1.0 / (std ** 2 * n_train))


def gradient_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """The global 2-norm of the gradients of ``params`` (a device scalar: no synchronisation)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, "get_total_norm"):
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


class Trainer(EpochLoop):
    """Trains one registered model on one data set; see the module docstring and
    :class:`~ppl_dgm.training.common.EpochLoop` (the epochs, records and summary)."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, progress: bool = True,
                 spec: ModelSpec | None = None) -> None:
        if config.scan_steps > 1:
            raise UserError("--scan-steps compiles NumPyro steps together; the Pyro backend runs "
                            "one step at a time", "omit --scan-steps, or add --backend numpyro")
        if getattr(config, "init_from", None):
            raise UserError("--init-from (a branch from another run's checkpoint) is implemented "
                            "for the NumPyro backend", "add --backend numpyro, or omit --init-from")
        self.bind(config, run_dir, progress, spec)
        self.device = resolve_device(config.device)
        self.flatten = self.task != "supervised"
        self.data, self.split, self.info = prepare_data(config, self.spec)
        self.task = training_task(self.task, self.info)  # --labels 0: unsupervised
        self._to_device()

        if config.threads is not None:
            apply_threads(config.threads)
        pyro.enable_validation(config.validate)
        pyro.set_rng_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.pair = build_pair(config, self.info, self.spec).to(self.device)
        self.check_pair()
        check_objective(config, self.pair, self.task, self.x_train[:2])
        self.elbo = make_elbo(config, self.pair)
        # the validation and test ELBO whatever the training objective (y summed out exactly), so
        # that runs trained with different objectives report the same quantity
        self.eval_elbo = TraceEnum_ELBO(max_plate_nesting=self.pair.max_plate_nesting,
                                        num_particles=config.num_particles,
                                        vectorize_particles=config.num_particles > 1)
        # TraceGraph_ELBO keeps its decaying-average baselines in Pyro's parameter store
        for name in [n for n in pyro.get_param_store().keys() if n.startswith("__baseline")]:
            del pyro.get_param_store()[name]
        self.opt, self.scheduler = make_optimizer(config, self.pair.parameters())
        self.steps_per_epoch = self._steps_per_epoch()
        self.warmup = LinearWarmup(round(config.warmup_epochs * self.steps_per_epoch))
        self.reset_counters()
        # "auto": read every step on a CPU (no device to wait for), once per epoch on a GPU
        self.finite_check = (config.finite_check if config.finite_check != "auto"
                             else "step" if self.device.type == "cpu" else "epoch")
        self._sums: dict[str, torch.Tensor] | None = None  # the epoch's running sums, on the device
        self._unchecked: list[torch.Tensor] = []  # per step since the last read: terms, grad norm

    def check_pair(self) -> None:
        """The pair contract (:mod:`ppl_dgm.contract`) on four training points, before any step."""
        x = self.x_train[:4]
        contract.check_pyro_pair(self.pair, self.spec, (x > 0.5).to(x.dtype) if self.flatten else x,
                                 self.y_train[:4], self.info.n_classes, task=self.task)

    # ----------------------------------------------------------------------------- data
    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        # (the size given, not inferred: an empty validation split has none to infer)
        return t.reshape(len(t), math.prod(t.shape[1:])) if self.flatten else t

    def _to_device(self) -> None:
        d, s = self.data, self.split
        train_idx = np.arange(len(d.x_train) - len(s.validation))
        self.x_train = self._tensor(d.x_train[train_idx])
        self.y_train = torch.as_tensor(d.y_train[train_idx], device=self.device)
        # Classifiers read the intensities (the mean of the binarised inputs they were trained on);
        # likelihoods are measured on binarised data, binarised once with fixed seeds.
        x_val = d.x_train[s.validation]
        self.x_val = self._tensor(x_val)
        self.y_val = torch.as_tensor(d.y_train[s.validation], device=self.device)
        self.x_test = self._tensor(d.x_test)
        self.y_test = torch.as_tensor(d.y_test, device=self.device)
        if self.flatten:  # VAE tasks: Bernoulli likelihoods
            self.x_val_binary = self._tensor(binarize_static(x_val, VALIDATION_SEED))
            self.x_test_binary = self._tensor(binarize_static(d.x_test, TEST_BINARIZATION_SEED))
        self.labelled = torch.as_tensor(s.labelled, device=self.device)
        self.unlabelled = torch.as_tensor(s.unlabelled, device=self.device)

    def _binarize(self, x: torch.Tensor) -> torch.Tensor:
        """Dynamic binarisation: a fresh Bernoulli sample of every training batch."""
        return torch.bernoulli(x) if self.flatten else x

    def _steps_per_epoch(self) -> int:
        n = len(self.unlabelled) if self.task == "semi-supervised" else len(self.x_train)
        steps = max(n // self.config.batch_size, 1)
        return min(steps, self.config.steps_per_epoch or steps)

    def _batches(self):
        """Index batches for one epoch (the numpy RNG is part of the checkpoint)."""
        cfg = self.config
        pool = self.unlabelled if self.task == "semi-supervised" else torch.arange(
            len(self.x_train), device=self.device)
        order = torch.as_tensor(self.rng.permutation(len(pool)), device=self.device)
        n_l = len(self.labelled)
        for i in range(self.steps_per_epoch):
            batch = pool[order[i * cfg.batch_size:(i + 1) * cfg.batch_size]]
            if self.task == "semi-supervised":
                pick = self.rng.choice(n_l, min(cfg.labelled_batch_size, n_l), replace=False)
                yield batch, self.labelled[torch.as_tensor(pick, device=self.device)]
            else:
                yield batch, None

    # ----------------------------------------------------------------------------- steps
    def compute_loss(self, idx: torch.Tensor, idx_l: torch.Tensor | None,
                     beta: float) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective of one batch (a differentiable scalar) and its statistics (a data-parallel
        trainer runs it through ``DistributedDataParallel``)."""
        x = self._binarize(self.x_train[idx])
        if self.task == "semi-supervised":
            x_l = self._binarize(self.x_train[idx_l])
            loss, stats = objectives.semi_supervised_loss(
                self.pair, self.elbo, x_l, self.y_train[idx_l], x, beta)
        elif self.task == "unsupervised" and self.config.free_bits > 0:
            loss, stats = free_bits_loss(self.pair, x, free_bits=self.config.free_bits, beta=beta)
        elif self.task == "unsupervised":
            loss, stats = objectives.unsupervised_loss(self.pair, self.elbo, x, beta)
        else:
            loss, stats = objectives.supervised_loss(self.pair, self.elbo, x, self.y_train[idx])
        return loss, stats

    def train_step(self, idx: torch.Tensor, idx_l: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One optimiser step; returns its statistics as device scalars (the loss terms and beta),
        which :meth:`train_epoch` sums on the device, and keeps them with the gradient norm (before
        clipping) for the finiteness check.

        With ``finite_check`` ``"step"`` the loss and gradient norm are read before the update (the
        step's one synchronisation): a non-finite step is never applied, and the error names the
        loss terms, sample sites and gradients that failed. With ``"epoch"`` nothing is read here:
        :meth:`check_partial_epoch` finds the first non-finite step afterwards."""
        beta = self.warmup(self.step)
        loss, stats = self.compute_loss(idx, idx_l, beta)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = list(self.pair.parameters())
        add_weight_prior(params, self.config.weight_prior_std, len(self.x_train))
        norm = clip_gradients(params, self.config)
        if norm is None:
            norm = gradient_norm(params)
        norm = norm.detach().to(loss.device)
        if self.finite_check == "step" and not bool(torch.isfinite(loss) & torch.isfinite(norm)):
            self._diverged_step(loss, norm, stats, idx, idx_l, beta)
        self.opt.step()
        self.step += 1
        self._unchecked.append(torch.stack([*stats.values(), norm.double()]))
        return {**stats, "beta": torch.tensor(beta, dtype=torch.float64, device=loss.device)}

    def _diverged_step(self, loss: torch.Tensor, norm: torch.Tensor, stats: dict[str, torch.Tensor],
                       idx: torch.Tensor, idx_l: torch.Tensor | None, beta: float) -> None:
        """Raise the :class:`~ppl_dgm.errors.DivergenceError` of this step, naming the loss terms,
        sample sites and parameters that are not finite (the parameters are still those before
        the step)."""
        if not torch.isfinite(loss):
            terms = [k for k, v in stats.items() if not math.isfinite(float(v))]
            what = f"the loss became {loss.item()}"
            self.diverged(what, terms=terms + self._nonfinite_sites(idx, idx_l, beta),
                          names=self.nonfinite_parameters())
        bad = [name for name, p in self.pair.named_parameters()
               if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        self.diverged(f"the gradient norm became {norm.item()}", names=[f"grad of {n}" for n in bad])

    def _nonfinite_sites(self, idx: torch.Tensor, idx_l: torch.Tensor | None,
                         beta: float) -> list[str]:
        """The sample sites of the guide and model whose log-density is not finite on this batch
        (best effort: a pair whose programs cannot be traced alone names none)."""
        from pyro import poutine

        x = self._binarize(self.x_train[idx])
        if self.task == "semi-supervised":
            calls = [(self._binarize(self.x_train[idx_l]), self.y_train[idx_l]), (x, None)]
        else:
            calls = [(x, self.y_train[idx] if self.task == "supervised" else None)]
        kwargs = {} if self.task == "supervised" else {"beta": beta}
        bad: list[str] = []
        for args in calls:
            try:
                with torch.no_grad():
                    guide = poutine.trace(self.pair.guide).get_trace(*args, **kwargs)
                    model = poutine.trace(poutine.replay(self.pair.model, trace=guide)).get_trace(
                        *args, **kwargs)
                for program, trace in (("guide", guide), ("model", model)):
                    for name, site in trace.nodes.items():
                        if site["type"] == "sample" and not bool(
                                torch.isfinite(site["fn"].log_prob(site["value"])).all()):
                            bad.append(f"{program} site {name!r}")
            except Exception:  # noqa: BLE001  (a diagnosis only)
                continue
        return sorted(set(bad))

    def nonfinite_parameters(self) -> list[str]:
        """Names of the parameters and buffers (batch-norm statistics) holding NaN or infinity."""
        named = [(n, t) for n, t in [*self.pair.named_parameters(), *self.pair.named_buffers()]
                 if t.is_floating_point()]
        if not named:
            return []
        finite = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
        return [n for (n, _), ok in zip(named, finite, strict=True) if not ok]

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predictions(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's most probable labels, in batches of ``eval_batch_size``."""
        bs = self.config.eval_batch_size
        return torch.cat([self.pair.classify(x[s:s + bs], self.config.classify_samples).argmax(-1)
                          for s in range(0, len(x), bs)])

    def classification_error(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Fraction of wrong labels (every position counts for sequences)."""
        return (self.predictions(x) != y).float().mean().item()

    def sequence_error(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Fraction of sequences with at least one wrong label."""
        return (self.predictions(x) != y).any(-1).float().mean().item()

    @property
    def has_auxiliary(self) -> bool:
        return hasattr(self.pair.q, "sample_class_probs")

    @torch.no_grad()
    def auxiliary_batch(self, x: torch.Tensor, start: int,
                        num_samples: int) -> tuple[np.ndarray, np.ndarray]:
        probs, scale = self.pair.q.sample_class_probs(x, num_samples)
        return probs.cpu().numpy(), scale.cpu().numpy()

    @torch.no_grad()
    def mean_elbo(self, x: torch.Tensor) -> float:
        bs = self.config.eval_batch_size
        total = sum(elbo_per_example(self.pair, self.eval_elbo, x[s:s + bs]) * len(x[s:s + bs])
                    for s in range(0, len(x), bs))
        return total / len(x)

    @torch.no_grad()
    def latent_record(self, x_val: torch.Tensor) -> dict[str, Any]:
        record: dict[str, Any] = {"kl": site_kl(self.pair, x_val[:500])}
        if self.task == "unsupervised":
            record["active_units"] = active_units(self.pair, x_val, num_samples=10)
        return record

    # ----------------------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "pair": self.pair.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "step": self.step,
            "train_seconds": self.train_seconds, "history": self.history,
            "numpy_rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "config": self.config.to_dict(), "in_epoch": self.in_epoch_record(),
            # TraceGraph_ELBO's decaying-average baselines live in Pyro's parameter store
            "baselines": {name: value.detach().clone()
                          for name, value in pyro.get_param_store().items()
                          if name.startswith("__baseline")},
        }

    def save_checkpoint(self) -> None:
        state = self.checkpoint_state()
        results.atomic_write(self.run_dir / results.CHECKPOINT, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self, path: str | Path | None = None) -> None:
        path = Path(path or self.run_dir / results.CHECKPOINT)
        state = self.read_checkpoint(
            path, lambda p: torch.load(p, map_location=self.device, weights_only=False))
        self.pair.load_state_dict(state["pair"])
        self.opt.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.train_seconds, self.history = state["train_seconds"], state["history"]
        self.rng.bit_generator.state = state["numpy_rng"]
        self.restore_in_epoch(state)
        self._sums, self._unchecked = None, []
        for name, value in state.get("baselines", {}).items():
            pyro.get_param_store()[name] = value
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # ----------------------------------------------------------------------------- the run
    def summary_extras(self) -> dict[str, Any]:
        return {"finite_check": self.finite_check}

    @property
    def device_name(self) -> str:
        return str(self.device)

    def set_training(self, training: bool) -> None:
        self.pair.train(training)

    def current_lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def train_epoch(self, bar: Any) -> dict[str, float]:
        """One epoch of optimiser steps (the rest of it after a mid-epoch checkpoint); the mean of
        each step statistic over all the epoch's steps.

        The statistics stay on the device: their running sums (float64, added step by step, so a
        resumed epoch sums exactly as an uninterrupted one) and each step's row for the check of
        ``finite_check="epoch"`` are read once, at the end of the epoch (or before a mid-epoch
        checkpoint: :meth:`check_partial_epoch`)."""
        progress = self.begin_epoch()
        for idx, idx_l in self.epoch_batches():
            stats = self.train_step(idx, idx_l)
            if self._sums is None:
                self._sums = {k: torch.as_tensor(progress["stats"].get(k, 0.0), dtype=torch.float64,
                                                 device=v.device) for k, v in stats.items()}
            for k, v in stats.items():
                self._sums[k] += v
            progress["steps_done"] += 1
            bar.update(1)
            self.check_stop()
        self._read_steps(progress)  # (the batches are exhausted: ``in_epoch`` is closed)
        self.scheduler.step()
        count = progress["steps_done"]
        sums: dict[str, float] = progress["stats"]
        bar.set_postfix(loss=f"{sums['loss'] / count:.2f}", beta=f"{sums['beta'] / count:.2f}")
        return {k: v / count for k, v in sums.items()}

    def check_partial_epoch(self) -> None:
        """Before a mid-epoch checkpoint: :meth:`_read_steps` of the epoch in progress."""
        if self.in_epoch is not None:
            self._read_steps(self.in_epoch)

    def _read_steps(self, progress: dict[str, Any]) -> None:
        """Read the statistics of the steps since the last read (one synchronisation): raise
        :class:`~ppl_dgm.errors.DivergenceError` at the first step whose statistics (loss terms,
        gradient norm) are not finite, else move the running sums into the epoch's record
        ``progress["stats"]`` (plain floats, which a mid-epoch checkpoint stores)."""
        if not self._unchecked:
            return
        rows = torch.stack(self._unchecked).cpu()  # per step: the loss terms and the gradient norm
        keys = [k for k in self._sums if k != "beta"] + ["grad_norm"]
        ok = torch.isfinite(rows).all(1)
        if not bool(ok.all()):
            first = int((~ok).nonzero()[0])
            step = self.step - len(rows) + first
            terms = [k for k, v in zip(keys, rows[first].tolist(), strict=True)
                     if not math.isfinite(v)]
            what = (f"the loss became {rows[first, keys.index('loss')].item()}" if "loss" in terms
                    else f"the gradient norm became {rows[first, keys.index('grad_norm')].item()}")
            self._unchecked.clear()
            self.diverged(what, step=step, terms=terms, names=self.nonfinite_parameters())
        self._unchecked.clear()
        progress["stats"] = {k: float(v) for k, v in self._sums.items()}
        self._sums = None

    @torch.no_grad()
    def write_plots(self) -> None:
        """Per-site KL against epochs (``kl.png``) and samples from the prior (``samples_prior.png``)."""
        from ppl_dgm.plots import image_grid, plot_site_kl

        if self.history and "kl" in self.history[-1]:
            plot_site_kl(results.history_dataset(self.history, {}), self.run_dir / "kl.png")
        if self.task == "unsupervised" and hasattr(self.pair.p, "sample_x"):
            images = self.pair.sample_x(100).reshape(100, *self.info.image_shape).cpu().numpy()
            image_grid(images, self.run_dir / "samples_prior.png", nrow=10)


def load_run(run_dir: str | Path, device: str = "auto") -> Trainer:
    """A trainer restored from ``run_dir`` (its config and last checkpoint), in eval mode."""
    run_dir = Path(run_dir)
    if not (run_dir / results.CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {results.CONFIG})")
    config = TrainConfig.from_dict(results.read_json(run_dir / results.CONFIG))
    config.device = device
    with warnings.catch_warnings():  # "cannot sample" was said when the run was trained
        warnings.simplefilter("ignore", contract.CannotSampleWarning)
        trainer = Trainer(config, run_dir, progress=False)
    trainer.load_checkpoint()
    trainer.pair.eval()
    return trainer
