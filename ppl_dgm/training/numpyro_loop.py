"""The training loop of the NumPyro backend: ``numpyro.infer.SVI`` with optax, checkpoints, records.

The twin of ``ppl_dgm.training.loop.Trainer`` (same constructor, ``fit``, run directory and summary
keys) for pairs registered with ``backend="numpyro"``. One SVI step is one jit-compiled function of
the SVI state, the on-device training arrays and the step's index batches: it gathers the labelled
and the unlabelled batch, binarises them dynamically (``jax.random.bernoulli``, keyed by the step
number), and calls ``SVI.update`` with :class:`ppl_dgm.infer.numpyro_objectives.EnumELBO` on the
:func:`~ppl_dgm.infer.numpyro_objectives.semi_supervised` programs, whose loss is
mean_labelled [L + alpha * CE] + mean_unlabelled U as in ``objectives.semi_supervised_loss``.
Unsupervised pairs (VAE, LVAE) take one SVI step per batch of the training set (binarised the same
way), with :class:`~ppl_dgm.infer.numpyro_objectives.TraceELBO` (``--elbo trace``, their default)
or ``EnumELBO`` (``--elbo trace_enum``) on the
:func:`~ppl_dgm.infer.numpyro_objectives.unsupervised` program (the batch's mean -ELBO, as
``objectives.unsupervised_loss``); their epochs record the validation ELBO and the per-site KL, and
their summary the test ELBO, as the Pyro trainer's do. Supervised pairs (the RNN-SPN, FFN-SPN and
CNN of ``models/rnn_spn_numpyro.py``: ``y`` observed, empty guide) take one SVI step per batch of
the training set (intensities, not binarised) with ``TraceELBO`` on the
:func:`~ppl_dgm.infer.numpyro_objectives.supervised` program, whose loss is the mean cross-entropy
over the batch's labels (``objectives.supervised_loss``); their epochs record the validation and
test digit errors, their summary the test digit and sequence errors, and nothing about an ELBO.

Everything is seeded from ``config.seed``: the data split and the batch order use numpy exactly as
the Pyro trainer does (both backends see the same batches), the parameters and the ELBO's noise
come from ``jax.random.PRNGKey(config.seed)``. The run directory receives ``config.json``,
``checkpoint.pkl`` (each epoch, and at a SIGINT/SIGTERM in the middle of one; atomically: SVI state
with parameters, optimiser and batch-norm state, numpy RNG, history, the position in the epoch),
``history.nc`` and ``summary.json``; ``resume=True`` continues from the checkpoint and gives the
same result as an uninterrupted run. Importing this module never imports torch.
"""

from __future__ import annotations

import math
import pickle
import time
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro import handlers
from numpyro.infer import SVI
from numpyro.optim import optax_to_numpyro

from ppl_dgm import contract, registry, results
from ppl_dgm.config import TrainConfig
from ppl_dgm.data import binarize_static
from ppl_dgm.errors import UserError
from ppl_dgm.infer.annealing import LinearWarmup
from ppl_dgm.infer.numpyro_objectives import (
    TraceELBO,
    elbo_per_example,
    make_elbo,
    pair_sites,
    semi_supervised,
    site_kl,
    supervised,
    unsupervised,
)
from ppl_dgm.infer.objective_names import BACKEND_OBJECTIVES
from ppl_dgm.infer.objective_names import check as check_objective
from ppl_dgm.numpyro_pair import NumPyroPair
from ppl_dgm.spec import ModelSpec
from ppl_dgm.threads import start_xla
from ppl_dgm.training.common import (
    TEST_BINARIZATION_SEED,
    VALIDATION_SEED,
    DataInfo,
    EpochLoop,
    default_alpha,
    prepare_data,
    training_task,
)

CHECKPOINT = "checkpoint.pkl"


def resolve_device(name: str) -> jax.Device:
    """``auto`` is JAX's default device (a GPU when jaxlib has one); ``cuda`` without one is an error."""
    if name == "auto":
        return jax.devices()[0]
    if name == "cpu":
        return jax.devices("cpu")[0]
    if name.startswith("cuda"):
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            gpus = []
        index = int(name.partition(":")[2] or 0)
        if index >= len(gpus):
            raise RuntimeError(f"--device {name} was asked for but JAX sees {len(gpus)} GPU(s)")
        return gpus[index]
    raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda")


def device_name(device: jax.Device) -> str:
    """``cpu`` or ``cuda:N`` (the Pyro trainer's spelling)."""
    return "cpu" if device.platform == "cpu" else f"cuda:{device.id}"


def build_pair(config: TrainConfig, info: DataInfo, spec: ModelSpec | None = None) -> NumPyroPair:
    """The registered NumPyro pair, with alpha (default 0.1 * N / N_labelled) for semi-supervised
    and ``num_particles`` (used by pairs that draw their particles inside the programs)."""
    spec = spec or registry.resolve_spec(config.model, config.backend, config.source)
    hparams = dict(config.hparams)
    if spec.task == "semi-supervised":
        hparams["alpha"] = config.alpha if config.alpha is not None else default_alpha(info)
    hparams["num_particles"] = config.num_particles
    pair = spec.builder()(hparams, info)
    contract.check_built(pair, spec)
    return pair


def learning_rate(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """lr * lr_decay ** (epoch // lr_decay_every), not below min_lr (the Pyro trainer's schedule)."""
    floor = config.min_lr / config.lr

    def schedule(count: jax.Array) -> jax.Array:
        if config.lr_decay_every <= 0:
            return jnp.asarray(config.lr, jnp.float32)
        epoch = count // steps_per_epoch
        factor = jnp.maximum(config.lr_decay ** (epoch // config.lr_decay_every), floor)
        return (config.lr * factor).astype(jnp.float32)

    return schedule


def make_optimizer(config: TrainConfig, steps_per_epoch: int, n_train: int = 1,
                   frozen: tuple[str, ...] = ()) -> optax.GradientTransformation:
    """Adam (``adam_betas``) or RMSprop through optax, after the clipping of ``clip_value`` and
    ``clip_norm`` in the order ``clip_order``; before the clipping, with ``weight_prior_std`` > 0,
    the gradient W / (std^2 ``n_train``) of the weight prior on every parameter with two or more
    dimensions (as the Pyro trainer's ``add_weight_prior``). The parameter sites of the networks
    named in ``frozen`` (``NAME$params``) get no update at all."""
    lr = learning_rate(config, steps_per_epoch)
    if config.optimizer == "adam":
        opt = optax.adam(lr, b1=config.adam_betas[0], b2=config.adam_betas[1],
                         eps=getattr(config, "adam_eps", 1e-8))
    elif config.optimizer == "rmsprop":
        # as torch.optim.RMSprop: decay alpha (default 0.99), eps (1e-8) outside the square root
        opt = optax.rmsprop(lr, decay=getattr(config, "rmsprop_alpha", 0.99),
                            eps=getattr(config, "rmsprop_eps", 1e-8), eps_in_sqrt=False)
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}: use adam or rmsprop")
    clips = [optax.clip(config.clip_value) if config.clip_value else None,
             optax.clip_by_global_norm(config.clip_norm) if config.clip_norm else None]
    if getattr(config, "clip_order", "value_then_norm") == "norm_then_value":  # as clip_gradients
        clips.reverse()
    clips = [c for c in clips if c is not None]
    if config.weight_prior_std > 0:
        clips.insert(0, optax.add_decayed_weights(
            1.0 / (config.weight_prior_std ** 2 * n_train),
            mask=lambda params: jax.tree_util.tree_map(lambda p: jnp.ndim(p) >= 2, params)))
    chain = optax.chain(*clips, opt) if clips else opt
    if not frozen:
        return chain

    def labels(params: dict[str, Any]) -> dict[str, str]:
        return {name: "frozen" if name.split("$")[0] in frozen else "train" for name in params}

    return optax.multi_transform({"train": chain, "frozen": optax.set_to_zero()}, labels)


class NumPyroTrainer(EpochLoop):
    """Trains one registered NumPyro pair on one data set; see the module docstring.

    Semi-supervised pairs (M2, ADGM, SDGM), unsupervised ones (VAE, LVAE) and supervised ones
    (RNN-SPN, FFN-SPN, CNN on digit sequences) each have a NumPyro training step.
    """

    checkpoint_name = CHECKPOINT

    def __init__(self, config: TrainConfig, run_dir: str | Path, progress: bool = True,
                 initialise: bool = True, spec: ModelSpec | None = None) -> None:
        """``initialise=False`` skips drawing (and compiling) the initial parameters: the SVI
        state is then only its structure until :meth:`load_checkpoint` (see :func:`load_run`)."""
        start_xla(config.threads or 0)  # XLA's thread pool sized for --threads (ppl_dgm.threads)
        if config.finite_check == "step":
            raise UserError("--finite-check step reads every Pyro step; the NumPyro backend reads "
                            "its steps' losses once per epoch", "omit --finite-check, or use epoch")
        self.bind(config, run_dir, progress, spec)
        if self.task not in ("semi-supervised", "unsupervised", "supervised"):
            raise NotImplementedError(
                f"the NumPyro trainer has no training step for {self.task} pairs "
                f"({config.model}); use --backend pyro")
        if config.elbo not in BACKEND_OBJECTIVES["numpyro"]:
            check_objective(config.elbo, backend="numpyro", task=self.task, model=config.model,
                            guide_sites=[], model_latents=[], num_particles=config.num_particles)
        if config.free_bits > 0:
            raise ValueError("free bits are not implemented for the NumPyro backend")
        self.device = resolve_device(config.device)
        self.data, self.split, self.info = prepare_data(config, self.spec)
        self.task = training_task(self.task, self.info)  # --labels 0: unsupervised
        self._to_device()

        self.rng = np.random.default_rng(config.seed)
        init_key, self.binarize_key, self.eval_key = jax.random.split(
            jax.random.PRNGKey(config.seed), 3)
        self.pair = build_pair(config, self.info, self.spec)
        if initialise:  # the pair contract (ppl_dgm.contract) on four points, before any step
            x = self.x_train[:4]
            contract.check_numpyro_pair(
                self.pair, self.spec, (x > 0.5).astype(x.dtype) if self.task != "supervised" else x,
                self.y_train[:4], self.info.n_classes, jax.random.fold_in(init_key, 1 << 20),
                task=self.task)
        if initialise:  # refuse an objective that cannot train the pair (one line)
            sites, latents = (([], []) if self.task == "supervised" else pair_sites(
                self.pair, {}, (self.x_train[:2] > 0.5).astype(self.x_train.dtype),
                jax.random.fold_in(init_key, 1 << 21)))
            check_objective(config.elbo, backend="numpyro", task=self.task, model=config.model,
                            guide_sites=sites, model_latents=latents,
                            num_particles=config.num_particles, renyi_alpha=config.renyi_alpha)
        self.steps_per_epoch = self._steps_per_epoch()
        self.schedule = learning_rate(config, self.steps_per_epoch)
        # pairs that vectorise their particles inside the programs need one ELBO particle
        elbo_particles = 1 if self.pair.particles_in_program else config.num_particles
        optimizer = optax_to_numpyro(make_optimizer(config, self.steps_per_epoch,
                                                    len(self.x_train), self.pair.frozen))
        x = self.data.x_train.reshape(len(self.data.x_train), -1)
        init_args: tuple
        if self.task == "semi-supervised":
            self.elbo = make_elbo(config.elbo, elbo_particles, self.pair.max_plate_nesting,
                                  config.renyi_alpha)
            self.svi = SVI(semi_supervised(self.pair.model), semi_supervised(self.pair.guide),
                           optimizer, self.elbo)
            self.batch_sizes = (min(config.labelled_batch_size, len(self.labelled)),
                                config.batch_size)
            idx_l = self.labelled[:self.batch_sizes[0]]
            idx_u = self.unlabelled[:self.batch_sizes[1]]
            init_args = (init_key, x[idx_l], self.data.y_train[idx_l].astype(np.int32), x[idx_u])
        elif self.task == "supervised":
            self.elbo = TraceELBO(elbo_particles, self.pair.max_plate_nesting)
            self.svi = SVI(supervised(self.pair.model), supervised(self.pair.guide), optimizer,
                           self.elbo)
            self.batch_sizes = (0, min(config.batch_size, len(self.x_train)))
            init_args = (init_key, x[:self.batch_sizes[1]],
                         self.data.y_train[:self.batch_sizes[1]].astype(np.int32))
        else:
            self.elbo = make_elbo(config.elbo, elbo_particles, self.pair.max_plate_nesting,
                                  config.renyi_alpha)
            # the Renyi bound takes its log-mean-exp per point before the batch mean
            scaled = config.elbo != "renyi"
            self.svi = SVI(unsupervised(self.pair.model, scaled),
                           unsupervised(self.pair.guide, scaled), optimizer, self.elbo)
            self.batch_sizes = (0, min(config.batch_size, len(self.x_train)))
            init_args = (init_key, x[:self.batch_sizes[1]])
        init = self._init_unsupervised if self.task == "unsupervised" else self.svi.init
        if initialise:
            with jax.default_device(self.device):  # jit: one compilation, not one per operation
                self.svi_state = jax.jit(init)(*init_args)
        else:  # traced, not compiled: sets SVI's constrain_fn; the values come from a checkpoint
            self.svi_state = jax.eval_shape(init, *init_args)
        self.warmup = LinearWarmup(round(config.warmup_epochs * self.steps_per_epoch))
        self._step_raw = {"semi-supervised": self._train_step,
                          "unsupervised": self._train_step_unsupervised,
                          "supervised": self._train_step_supervised}[self.task]
        self._step_fn = jax.jit(self._step_raw)
        self._scan_fn = jax.jit(self._scan_steps)
        self._classify = jax.jit(self.pair.classify, static_argnames="num_samples")
        # the pair's own kind of ELBO: Trace_ELBO (the same value, cheaper to compile) without y
        self._elbo = jax.jit(partial(elbo_per_example, self.pair,
                                     enumerated=self.spec.task == "semi-supervised"))
        self._site_kl = jax.jit(partial(site_kl, self.pair))
        self.compile_seconds = 0.0
        self.reset_counters()

    def _init_unsupervised(self, rng_key: jax.Array, x: jax.Array) -> Any:
        """``SVI.init`` with the guide's initial parameters and batch-norm state handed to it.

        ``SVI.init`` runs the model with the guide's parameters substituted but not its mutable
        state, so a network shared by both programs with batch norm (the ladder guide's
        ``share_top_down``) would enter the model with parameters and no state; the guide is
        traced first here (its key is ``SVI.init``'s guide key) and both are passed on.
        """
        guide_key = jax.random.split(rng_key, 3)[2]
        guide_trace = handlers.trace(handlers.seed(self.svi.guide, guide_key)).get_trace(x)
        init_params = {name: site["value"] for name, site in guide_trace.items()
                       if site["type"] in ("param", "mutable")}
        return self.svi.init(rng_key, x, init_params=init_params)

    # ----------------------------------------------------------------------------- data
    def _array(self, x: np.ndarray, dtype: Any = np.float32) -> jax.Array:
        x = np.asarray(x, dtype)  # converted by numpy: no XLA compilation per conversion
        if dtype == np.float32:  # (an empty validation split has no size to infer)
            x = x.reshape(len(x), int(np.prod(x.shape[1:])))
        return jax.device_put(x, self.device)

    def _to_device(self) -> None:
        d, s = self.data, self.split
        n_train = len(d.x_train) - len(s.validation)
        self.x_train = self._array(d.x_train[:n_train])
        self.y_train = self._array(d.y_train[:n_train], np.int32)
        # Classifiers read the intensities; likelihoods are measured on data binarised once.
        x_val = d.x_train[s.validation]
        self.x_val = self._array(x_val)
        self.y_val = self._array(d.y_train[s.validation], np.int32)
        self.x_test = self._array(d.x_test)
        self.y_test = self._array(d.y_test, np.int32)
        if self.task != "supervised":  # likelihoods are measured on binarised data
            self.x_val_binary = self._array(binarize_static(x_val, VALIDATION_SEED))
            self.x_test_binary = self._array(binarize_static(d.x_test, TEST_BINARIZATION_SEED))
        self.labelled = np.asarray(s.labelled)
        self.unlabelled = np.asarray(s.unlabelled)

    def _steps_per_epoch(self) -> int:
        n = len(self.unlabelled) if self.task == "semi-supervised" else len(self.x_train)
        steps = max(n // self.config.batch_size, 1)
        return min(steps, self.config.steps_per_epoch or steps)

    def _batches(self):
        """Index batches for one epoch, drawn exactly as the Pyro trainer draws them: (labelled,
        unlabelled) pairs, or (``None``, batch) of the whole training set for unsupervised and
        supervised pairs."""
        cfg = self.config
        if self.task != "semi-supervised":
            order = self.rng.permutation(len(self.x_train))
            for i in range(self.steps_per_epoch):
                yield None, order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            return
        order = self.rng.permutation(len(self.unlabelled))
        n_l = len(self.labelled)
        for i in range(self.steps_per_epoch):
            batch = self.unlabelled[order[i * cfg.batch_size:(i + 1) * cfg.batch_size]]
            pick = self.rng.choice(n_l, self.batch_sizes[0], replace=False)
            yield self.labelled[pick], batch

    # ----------------------------------------------------------------------------- steps
    def _train_step(self, svi_state: Any, x_train: jax.Array, y_train: jax.Array,
                    idx_l: jax.Array, idx_u: jax.Array, step: jax.Array,
                    beta: jax.Array) -> tuple[Any, jax.Array]:
        """One SVI step on a labelled and an unlabelled batch, binarised here (inside jit)."""
        key_l, key_u = jax.random.split(jax.random.fold_in(self.binarize_key, step))
        x_l = jax.random.bernoulli(key_l, x_train[idx_l]).astype(x_train.dtype)
        x_u = jax.random.bernoulli(key_u, x_train[idx_u]).astype(x_train.dtype)
        return self.svi.update(svi_state, x_l, y_train[idx_l], x_u, beta=beta)

    def _train_step_unsupervised(self, svi_state: Any, x_train: jax.Array, idx: jax.Array,
                                 step: jax.Array, beta: jax.Array) -> tuple[Any, jax.Array]:
        """One SVI step on a batch of the training set, binarised here (inside jit)."""
        key = jax.random.fold_in(self.binarize_key, step)
        x = jax.random.bernoulli(key, x_train[idx]).astype(x_train.dtype)
        return self.svi.update(svi_state, x, beta=beta)

    def _train_step_supervised(self, svi_state: Any, x_train: jax.Array, y_train: jax.Array,
                               idx: jax.Array, step: jax.Array,
                               beta: jax.Array) -> tuple[Any, jax.Array]:
        """One SVI step on a labelled batch of the training set (intensities; ``step`` and
        ``beta`` are unused: no binarisation, no latent site)."""
        return self.svi.update(svi_state, x_train[idx], y_train[idx])

    def _scan_steps(self, svi_state: Any, *args: jax.Array) -> tuple[Any, jax.Array]:
        """Several SVI steps in one compiled program: ``lax.scan`` of the training step over the
        stacked per-step arguments (the index batches, step numbers and betas; the data arrays,
        the first one or two of ``args``, are shared). Returns the state and the steps' losses."""
        n_shared = 1 if self.task == "unsupervised" else 2
        shared, per_step = args[:n_shared], args[n_shared:]

        def body(state: Any, xs: tuple[jax.Array, ...]) -> tuple[Any, jax.Array]:
            return self._step_raw(state, *shared, *xs)

        return jax.lax.scan(body, svi_state, per_step)

    def _stacked_args(self, batches: list[tuple[Any, np.ndarray]], betas: list[float]) -> tuple:
        """The arguments of :meth:`_scan_steps` for ``batches`` and their warm-up ``betas``, from
        step ``self.step`` on."""
        steps = np.arange(self.step, self.step + len(batches))
        tail = (jnp.asarray(np.stack([u for _, u in batches]), jnp.int32),
                jnp.asarray(steps, jnp.int32), jnp.asarray(betas, jnp.float32))
        if self.task == "unsupervised":
            return (self.x_train, *tail)
        if self.task == "supervised":
            return (self.x_train, self.y_train, *tail)
        return (self.x_train, self.y_train,
                jnp.asarray(np.stack([lab for lab, _ in batches]), jnp.int32), *tail)

    def train_steps(self, batches: list[tuple[Any, np.ndarray]]) -> tuple[jax.Array, list[float]]:
        """``len(batches)`` optimiser steps compiled together (``TrainConfig.scan_steps``); the
        same updates as that many :meth:`train_step` calls. Returns the (device) losses and betas."""
        betas = [self.warmup(self.step + i) for i in range(len(batches))]  # as train_step's
        self.svi_state, losses = self._scan_fn(self.svi_state,
                                               *self._stacked_args(batches, betas))
        self.step += len(batches)
        return losses, betas

    def _step_args(self, idx_l: np.ndarray | None, idx_u: np.ndarray, step: int,
                   beta: float) -> tuple:
        tail = (jnp.asarray(idx_u, jnp.int32), jnp.asarray(step, jnp.int32),
                jnp.asarray(beta, jnp.float32))
        if self.task == "unsupervised":
            return (self.x_train, *tail)
        if self.task == "supervised":
            return (self.x_train, self.y_train, *tail)
        return (self.x_train, self.y_train, jnp.asarray(idx_l, jnp.int32), *tail)

    def compile(self) -> None:
        """Compile the training step ahead of time (kept out of the epochs' timings)."""
        if not isinstance(self._step_fn, jax.stages.Compiled):
            started = time.perf_counter()
            if self.task == "semi-supervised":
                idx_l, idx_u = self.labelled[:self.batch_sizes[0]], self.unlabelled[
                    :self.batch_sizes[1]]
            else:
                idx_l, idx_u = None, np.arange(self.batch_sizes[1])
            self._step_fn = self._step_fn.lower(
                self.svi_state, *self._step_args(idx_l, idx_u, 0, 1.0)).compile()
            self.compile_seconds += time.perf_counter() - started

    def train_step(self, idx_l: np.ndarray | None, idx_u: np.ndarray) -> tuple[jax.Array, float]:
        """One optimiser step (``idx_l`` is ``None`` for unsupervised and supervised pairs);
        returns the (device) loss and beta."""
        beta = self.warmup(self.step)
        self.svi_state, loss = self._step_fn(self.svi_state,
                                             *self._step_args(idx_l, idx_u, self.step, beta))
        self.step += 1
        return loss, beta

    @property
    def params(self) -> dict[str, Any]:
        """The parameters and batch-norm statistics: every site value the programs read."""
        return {**self.svi.get_params(self.svi_state), **(self.svi_state.mutable_state or {})}

    # ----------------------------------------------------------------------------- evaluation
    def predictions(self, x: jax.Array) -> np.ndarray:
        """The classifier's most probable labels, ``(N,)`` or ``(N, T)`` for sequences, in batches of
        ``eval_batch_size`` (batch norm on its running statistics; a sampling classifier averages
        ``classify_samples`` draws, keyed by the batch's position)."""
        params, bs = self.params, self.config.eval_batch_size
        key = jax.random.fold_in(self.eval_key, 1 << 20)  # not one of mean_elbo's keys
        return np.concatenate([
            np.asarray(self._classify(params, x[start:start + bs],
                                      num_samples=self.config.classify_samples,
                                      rng_key=jax.random.fold_in(key, start)).argmax(-1))
            for start in range(0, len(x), bs)])

    def classification_error(self, x: jax.Array, y: jax.Array) -> float:
        """Fraction of wrong labels of q(y | x) (every position counts for sequences)."""
        wrong = self.predictions(x) != np.asarray(y)
        return int(wrong.sum()) / wrong.size

    def sequence_error(self, x: jax.Array, y: jax.Array) -> float:
        """Fraction of sequences with at least one wrong label."""
        wrong = self.predictions(x) != np.asarray(y)
        return int(wrong.any(-1).sum()) / len(wrong)

    def mean_elbo(self, x: jax.Array) -> float:
        """The ELBO (y enumerated if the pair has one, beta = 1) in nats per example, with fixed
        noise keys."""
        params, total, bs = self.params, 0.0, self.config.eval_batch_size
        for i, start in enumerate(range(0, len(x), bs)):
            xb = x[start:start + bs]
            total += float(self._elbo(params, xb, jax.random.fold_in(self.eval_key, i))) * len(xb)
        return total / len(x)

    @property
    def has_auxiliary(self) -> bool:
        return hasattr(self.pair.guide, "sample_class_probs")

    def auxiliary_batch(self, x: jax.Array, start: int,
                        num_samples: int) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "_sample_class_probs"):
            self._sample_class_probs = jax.jit(self.pair.guide.sample_class_probs,
                                               static_argnames="num_samples")
        key = jax.random.fold_in(jax.random.fold_in(self.eval_key, 1 << 22), start)
        probs, scale = self._sample_class_probs(self.params, x, num_samples=num_samples,
                                                rng_key=key)
        return np.asarray(probs), np.asarray(scale)

    def latent_record(self, x_val: jax.Array) -> dict[str, Any]:
        kl = self._site_kl(self.params, x_val[:500], self.eval_key)
        return {"kl": {name: float(value) for name, value in kl.items()}}

    # ----------------------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "svi_state": jax.device_get(self.svi_state), "epoch": self.epoch, "step": self.step,
            "train_seconds": self.train_seconds, "history": self.history,
            "numpy_rng": self.rng.bit_generator.state, "config": self.config.to_dict(),
            "in_epoch": jax.device_get(self.in_epoch_record()),  # the step losses fetched
        }

    def save_checkpoint(self) -> None:
        state = self.checkpoint_state()

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)

        results.atomic_write(self.run_dir / CHECKPOINT, write)

    def load_checkpoint(self, path: str | Path | None = None) -> None:
        path = Path(path or self.run_dir / CHECKPOINT)

        def read(p: Path) -> dict[str, Any]:
            with open(p, "rb") as f:
                return pickle.load(f)

        state = self.read_checkpoint(path, read)
        self.svi_state = jax.device_put(state["svi_state"], self.device)
        self.epoch, self.step = state["epoch"], state["step"]
        self.train_seconds, self.history = state["train_seconds"], state["history"]
        self.rng.bit_generator.state = state["numpy_rng"]
        self.restore_in_epoch(state)

    # ----------------------------------------------------------------------------- the run
    @property
    def device_name(self) -> str:
        return device_name(self.device)

    def before_fit(self) -> None:
        if self.config.init_from and self.step == 0 and not self.history:
            self.branch_from(Path(self.config.init_from))
        self.compile()

    #: configuration fields a branch must share with the run it starts from (the data it sees)
    BRANCH_IDENTITY = ("model", "backend", "dataset", "dataset_options", "labels", "seed",
                       "validation_size", "include_labelled_in_unlabelled", "batch_size",
                       "labelled_batch_size", "steps_per_epoch")

    def branch_from(self, run_dir: Path) -> None:
        """Start from ``run_dir``'s checkpoint (``TrainConfig.init_from``): its parameters and
        batch-norm statistics, epoch, step and numpy generator (the batch sequence goes on as in
        that run); a fresh optimiser state and an empty history."""
        path = run_dir / CHECKPOINT
        if not path.is_file():
            raise UserError(f"--init-from {run_dir}: no {CHECKPOINT} there",
                            "name the directory of a NumPyro run that has written a checkpoint")

        def read(p: Path) -> dict[str, Any]:
            with open(p, "rb") as f:
                return pickle.load(f)

        try:
            state = read(path)
        except Exception as err:  # noqa: BLE001  (any unpickling failure means a damaged file)
            raise UserError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})",
                            "restore it from a copy") from err
        source = state.get("config") or {}
        mine = self.config.to_dict()
        differ = [f"{k}: {source.get(k)!r} there, {mine.get(k)!r} here"
                  for k in self.BRANCH_IDENTITY if source.get(k) != mine.get(k)
                  and not (isinstance(mine.get(k), tuple | list) and list(mine[k]) == source.get(k))]
        if differ:
            raise UserError(f"--init-from {run_dir} trained on other data: " + "; ".join(differ),
                            "branch with the source run's model, data set, labels, seed and "
                            "batch sizes")
        if state.get("in_epoch") is not None:
            raise UserError(f"--init-from {run_dir}: its checkpoint stopped in the middle of epoch "
                            f"{state['epoch'] + 1}", "branch from a checkpoint written between "
                            "two epochs (resume the source run to the end of its epoch first)")
        if state["epoch"] >= self.config.epochs:
            raise UserError(f"--init-from {run_dir} has done {state['epoch']} epochs, --epochs is "
                            f"{self.config.epochs}", "--epochs counts from the source run's start: "
                            f"give more than {state['epoch']}")
        source_state = jax.device_put(state["svi_state"], self.device)
        params = self.svi.optim.get_params(source_state.optim_state)
        mine_params = self.svi.optim.get_params(self.svi_state.optim_state)
        if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(mine_params):
            raise UserError(f"--init-from {run_dir}: its networks have another structure",
                            "branch with the same network hyperparameters (sizes, batch norm)")
        self.svi_state = self.svi_state._replace(
            optim_state=self.svi.optim.init(params),
            mutable_state=source_state.mutable_state)
        self.epoch, self.step = state["epoch"], state["step"]
        self.rng.bit_generator.state = state["numpy_rng"]

    def current_lr(self) -> float:
        return float(self.schedule(self.step))

    def summary_extras(self) -> dict[str, Any]:
        return {"compile_seconds": self.compile_seconds}

    def train_epoch(self, bar: Any) -> dict[str, float]:
        """One epoch of SVI steps (the rest of it after a mid-epoch checkpoint); the mean loss and
        beta over all the epoch's steps (raises if the loss is not finite)."""
        progress = self.begin_epoch()
        # the losses (device values: no synchronisation per step) and betas of the steps done
        losses = progress["stats"].setdefault("losses", [])
        betas = progress["stats"].setdefault("betas", [])
        chunk = self.config.scan_steps
        batches = self.epoch_batches()
        while True:
            left = self.steps_per_epoch - progress["steps_done"]
            if chunk > 1 and left >= chunk:  # ``chunk`` steps compiled together
                chunk_losses, chunk_betas = self.train_steps(
                    [next(batches) for _ in range(chunk)])
                losses.append(chunk_losses)  # one device array of the chunk's losses
                betas.extend(chunk_betas)
                done = chunk
            elif left > 0:  # one compiled step (also the rest of an epoch after the chunks)
                loss, beta = self.train_step(*next(batches))
                losses.append(loss)
                betas.append(beta)
                done = 1
            else:
                next(batches, None)  # the epoch's batches are exhausted: ends its record
                break
            progress["steps_done"] += done
            bar.update(done)
            self.check_stop()
        mean_loss = self._mean_loss(losses)
        bar.set_postfix(loss=f"{mean_loss:.2f}", beta=f"{betas[-1]:.2f}")
        return {"loss": mean_loss, "beta": float(np.mean(betas))}

    def _mean_loss(self, losses: list[Any]) -> float:
        """The mean of the epoch's step losses so far; raises :class:`DivergenceError` naming the
        first step whose loss is not finite."""
        # scalars of single steps and arrays of scanned chunks, in step order
        stacked = jnp.concatenate([jnp.atleast_1d(loss) for loss in losses])
        mean_loss = float(jnp.mean(stacked))  # waits for the last step
        if not math.isfinite(mean_loss):
            # each step's loss is that of the parameters before it: the first non-finite one is
            # the step at which the loss (or, through the step before, the parameters) failed
            first = int(np.flatnonzero(~np.isfinite(np.asarray(stacked)))[0])
            step = self.step - len(stacked) + first
            self.diverged(f"the loss became {float(stacked[first])}", step=step, terms=["loss"],
                          names=self.nonfinite_parameters())
        return mean_loss

    def check_partial_epoch(self) -> None:
        """The losses of the epoch's steps so far are finite (before a mid-epoch checkpoint)."""
        if self.in_epoch is not None and self.in_epoch["stats"].get("losses"):
            self._mean_loss(self.in_epoch["stats"]["losses"])

    def nonfinite_parameters(self) -> list[str]:
        """Names of the parameter (and batch-norm state) sites holding NaN or infinity."""
        params = self.params
        flags = {name: jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf))
                                            for leaf in jax.tree_util.tree_leaves(value)
                                            if jnp.issubdtype(jnp.asarray(leaf).dtype,
                                                              jnp.floating)] or [True]))
                 for name, value in params.items()}
        host = jax.device_get(flags)
        return sorted(name for name, ok in host.items() if not bool(ok))

    def write_plots(self) -> None:
        """Per-site KL against epochs (``kl.png``) and, for unsupervised pairs, samples from the
        prior (``samples_prior.png``), as the Pyro trainer writes them."""
        from ppl_dgm.plots import image_grid, plot_site_kl

        if self.history and "kl" in self.history[-1]:
            plot_site_kl(results.history_dataset(self.history, {}), self.run_dir / "kl.png")
        if self.task == "unsupervised" and self.pair.sampler is not None:
            key = jax.random.fold_in(self.eval_key, 1 << 21)
            sample = jax.jit(self.pair.sample_x, static_argnums=2)  # one compilation
            images = np.asarray(sample(self.params, key, 100))
            image_grid(images.reshape(100, *self.info.image_shape), self.run_dir /
                       "samples_prior.png", nrow=10)


def load_run(run_dir: str | Path, device: str = "auto") -> NumPyroTrainer:
    """A NumPyro trainer restored from ``run_dir`` (its config and last checkpoint)."""
    run_dir = Path(run_dir)
    if not (run_dir / results.CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {results.CONFIG})")
    config = TrainConfig.from_dict(results.read_json(run_dir / results.CONFIG))
    config.device = device
    trainer = NumPyroTrainer(config, run_dir, progress=False, initialise=False)
    trainer.load_checkpoint()
    return trainer
