"""``ppl-dgm``: train, evaluate and sample registered model/guide pairs.

    ppl-dgm models
    ppl-dgm train m2 --dataset digits --labels 100 --epochs 30 --out runs/m2-digits
    ppl-dgm evaluate runs/m2-digits --iw-samples 5000
    ppl-dgm sample runs/m2-digits
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from ppl_dgm import registry, results, rundir
from ppl_dgm.config import parse_value, resolve
from ppl_dgm.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_CODES_HELP,
    PplDgmError,
    RunDirectoryError,
    UserError,
    describe,
)
from ppl_dgm.infer import objective_names
from ppl_dgm.rundir import RESUMABLE_FLAGS, check_new_run
from ppl_dgm.threads import apply_threads, default_threads

# CLI flags that map one-to-one onto TrainConfig fields (None = keep the registered default).
TRAIN_FLAGS: dict[str, dict[str, Any]] = {
    "preset": dict(help="an authors' script to follow setting by setting ('ppl-dgm models MODEL "
                        "--preset NAME' lists what it sets and what still differs; your other "
                        "options override it) (default: none, the registered recipe)"),
    "dataset": dict(help="digits, mnist, mnist-sequence, svhn, norb, omniglot, or a path to an "
                         ".npz"),
    "data_dir": dict(help="folder holding mnist.npz (else $PPL_DGM_DATA, then the user cache)"),
    "labels": dict(type=int, help="number of labelled training points, balanced; 0 trains a label "
                                  "model (e.g. cagem) fully unsupervised"),
    "epochs": dict(type=int, help="passes over the (unlabelled) training set"),
    "batch_size": dict(type=int, help="unlabelled (or plain) batch size"),
    "labelled_batch_size": dict(type=int, help="labelled points per step (semi-supervised)"),
    "seed": dict(type=int, help="seeds the split, the batches and the parameters"),
    "warmup_epochs": dict(type=float, help="epochs of linear KL warm-up from 0 to 1"),
    "device": dict(help="auto (CUDA when present), cpu or cuda"),
    "lr": dict(type=float, help="learning rate"),
    "optimizer": dict(choices=["adam", "rmsprop"], help="adam or rmsprop"),
    "adam_eps": dict(type=float, help="Adam's epsilon (> 0; the LVAE authors' script: 1e-4)"),
    "lr_decay": dict(type=float, help="factor applied to the learning rate every --lr-decay-every "
                                      "epochs"),
    "lr_decay_every": dict(type=int, help="epochs between learning-rate decays (0: never)"),
    "min_lr": dict(type=float, help="floor of the decayed learning rate"),
    "clip_norm": dict(type=float, help="global gradient-norm clipping (>= 0; 0 turns it off)"),
    "clip_value": dict(type=float, help="element-wise gradient clipping (order: --clip-order)"),
    "clip_order": dict(choices=["value_then_norm", "norm_then_value"],
                       help="order of --clip-value and --clip-norm (ADGM/SDGM: norm_then_value, "
                            "as their authors)"),
    "alpha": dict(type=float, help="classification weight (default 0.1 * N / N_labelled)"),
    "num_particles": dict(type=int, help="Monte Carlo samples per step (vectorised)"),
    "elbo": dict(metavar="OBJECTIVE", help=objective_names.HELP),
    "renyi_alpha": dict(type=float, help="order alpha of --elbo renyi: >= 0, not 1 (default 0: "
                                         "the importance-weighted bound)"),
    "validation_size": dict(type=int, help="training points held out for model selection "
                                           "(unset: 10,000 for MNIST-sized sets, else 10%%)"),
    "steps_per_epoch": dict(type=int, help="cap on the optimiser steps of an epoch (>= 1; "
                                           "default: no cap, a full pass)"),
    "classify_samples": dict(type=int, help="samples averaged by the classifier at evaluation"),
    "eval_batch_size": dict(type=int, help="points per evaluation batch (lower it when memory is short)"),
    "eval_every": dict(type=int, help="evaluate at the epoch end that reaches each multiple of this "
                                      "many optimiser steps, and at the last epoch (unset: every "
                                      "epoch)"),
    "free_bits": dict(type=float, help="free bits per latent site (unsupervised models)"),
    "weight_prior_std": dict(type=float, help="std of a N(0, std^2) prior on every weight matrix, "
                                              "scaled by 1/N as the ADGM/SDGM authors (0: none)"),
    "scan_steps": dict(type=int, help="NumPyro: optimiser steps compiled together with lax.scan "
                                      "(0 or 1: one step at a time)"),
    "finite_check": dict(choices=["auto", "step", "epoch"],
                         help="when the losses and gradient norms are read to stop a diverging "
                              "run: every step (Pyro; a bad step is never applied), or once per "
                              "epoch (no per-step synchronisation); auto: step for Pyro on a CPU, "
                              "else epoch (default auto)"),
    "max_minutes": dict(type=float, help="stop after the epoch that passes this training time"),
    "budget_clock": dict(choices=["wall", "cpu"],
                         help="the clock of --max-minutes: wall time, or the process's CPU time "
                              "(fair budgets on a shared machine) (default wall)"),
    "threads": dict(type=int, help="CPU threads of torch and XLA (0: every core; default "
                                   "$OMP_NUM_THREADS, else 1)"),
    "init_from": dict(metavar="RUN_DIR",
                      help="branch: start from the parameters, batch-norm statistics and step of "
                           "RUN_DIR's checkpoint (NumPyro; same model, data, labels and seed; a "
                           "fresh optimiser; --epochs counts from that run's start) (default: "
                           "none)"),
    "backend": dict(choices=["pyro", "numpyro"],
                    help="pyro or numpyro (default: the pair's own; pyro for registered names)"),
}


def _flag_help(name: str, kwargs: dict[str, Any]) -> str:
    """A TRAIN_FLAGS help with its default: the pair's (``ppl-dgm models NAME``), else TrainConfig's
    (left as written when the help already states its default)."""
    import dataclasses

    from ppl_dgm.config import TrainConfig

    text = kwargs.get("help", name.replace("_", " "))
    if "default" in text:
        return text
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    default = fields[name].default if name in fields else None
    shown = "unset" if default is None else str(default)
    return f"{text} (default: the model's, else {shown})"


def _key_values(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    out = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"{flag} expects KEY=VALUE, got {item!r}", f"e.g. {flag} z_dim=32")
        out[key] = parse_value(value)
    return out


def cmd_models(args: argparse.Namespace) -> int:
    if args.name:
        return show_model(args.name, args.backend, args.preset)
    if args.preset:
        raise UserError("--preset needs a model NAME", "e.g. ppl-dgm models adgm --preset workshop")
    from ppl_dgm import user_pairs
    from ppl_dgm.contract import ContractError

    for spec in registry.all_specs():
        print(f"{spec.name:<10} {spec.backend:<8} {spec.task:<16} {spec.description}")
    for ep in user_pairs.entry_points():
        try:
            specs = user_pairs.entry_point_specs(ep)
        except ContractError as err:
            print(f"{ep.name:<10} {'?':<8} {'?':<16} (cannot be loaded: {err})")
            continue
        for spec in specs:
            dist = spec.source.get("distribution") or ep.value
            print(f"{spec.name:<10} {spec.backend:<8} {spec.task:<16} {spec.description} [{dist}]")
    # the hint goes to stderr, so that standard output stays one table row per pair
    print("\n'ppl-dgm models NAME' shows a pair's hyperparameters and training defaults; your own "
          "pair trains as 'ppl-dgm train path/to/my_pair.py:build' (see ppl_dgm/contract.py)",
          file=sys.stderr)
    return 0


def model_defaults(spec: registry.ModelSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, training options) a run of ``spec`` gets when no option is given: the
    TrainConfig defaults merged with the spec's ``train``, as ``train`` resolves them."""
    config = resolve(spec, {}).to_dict()
    hparams = config.pop("hparams")
    for key in ("model", "source"):
        config.pop(key)
    return hparams, config


# what a training default means where its name could mislead (``ppl-dgm models NAME``)
_DEFAULT_NOTES = {
    "validate": "Pyro's argument and shape checks (--validate), not held-out validation: that is "
                "validation_size",
    "validation_size": "training points held out for model selection; None: 10,000 for MNIST-sized "
                       "sets, else 10%",
}


def show_model(name: str, backend: str | None = None, preset: str | None = None) -> int:
    """``ppl-dgm models NAME``: the pair's task, source, hyperparameters and training defaults;
    with ``preset``, what the preset sets and what still differs from its script, then the
    defaults a run with it gets."""
    from ppl_dgm import presets

    # the Pyro pair (the default backend) first, then its NumPyro twin
    registered = sorted((b for n, b in registry._REGISTRY if n == name), key=lambda b: b != "pyro")
    if registered and backend is None:
        specs = [registry.get(name, b) for b in registered]
    else:
        specs = [registry.resolve_spec(name, backend)]
    for i, spec in enumerate(specs):
        if i:
            print()
        print(f"{spec.name} ({spec.backend}, {spec.task}): {spec.description}")
        source = spec.source or {}
        if source.get("kind") == "file":
            where = f"{source['path']}:{source['attribute']} (sha256 {source['sha256'][:12]})"
        elif source.get("kind") == "module":
            where = f"{source['module']}:{source['attribute']} ({source.get('path')})"
        elif source.get("kind") == "entry_point":
            where = f"entry point {source['name']} = {source['value']} ({source.get('distribution')})"
        else:
            where = f"registered, {spec.build if isinstance(spec.build, str) else spec.build.__module__}"
        print(f"  source: {where}")
        if preset:
            for line in presets.describe(presets.get(spec.name, preset), spec):
                print("  " + line)
            spec = presets.apply(spec, preset)
        elif i == 0 and presets.presets_for(spec.name):
            names = ", ".join(p.name for p in presets.presets_for(spec.name))
            print(f"  presets (--preset NAME; 'ppl-dgm models {spec.name} --preset NAME'): {names}")
        hparams, train = model_defaults(spec)
        print("  hyperparameters (--set KEY=VALUE):" + ("" if hparams else " none declared"))
        for key, value in hparams.items():
            print(f"    {key} = {value!r}")
        print("  training defaults (* = the pair's own, the rest TrainConfig's; override with --KEY):")
        for key, value in train.items():
            mark = "*" if key in spec.train else " "
            note = _DEFAULT_NOTES.get(key)
            print(f"   {mark}{key} = {value!r}" + (f"   ({note})" if note else ""))
    return 0


def trainer_class(backend: str, distributed: bool = False) -> Any:
    """The trainer of a backend, imported lazily (the Pyro side never imports JAX, nor the reverse);
    ``distributed``: its data-parallel form (DDP for Pyro, the batch sharded over JAX's devices)."""
    if backend == "numpyro":
        if distributed:
            from ppl_dgm.train.numpyro_sharded import ShardedNumPyroTrainer

            return ShardedNumPyroTrainer
        from ppl_dgm.train.numpyro_loop import NumPyroTrainer

        return NumPyroTrainer
    if distributed:
        from ppl_dgm.train.distributed import DistributedTrainer

        return DistributedTrainer
    from ppl_dgm.train.loop import Trainer

    return Trainer


def _resume_target(args: argparse.Namespace) -> dict[str, Any] | None:
    """With ``--resume``: the saved configuration of ``--out``, whose model and backend fill in
    the ones not given (a different model or backend is refused); else check a model was named."""
    if not args.resume:
        if not args.model:
            raise UserError("train needs a MODEL", "name one of 'ppl-dgm models' (or pass "
                            "--resume --out DIR to continue a run)")
        return None
    if not args.out:
        raise UserError("--resume needs --out DIR", "name the run directory to continue")
    path = Path(args.out) / results.CONFIG
    if not path.is_file():
        raise RunDirectoryError(f"{args.out} holds no run to resume (no {results.CONFIG})",
                                "train without --resume to start one")
    saved = results.read_json(path)  # a file that is not JSON: one line naming it
    for key, given in (("model", args.model), ("backend", args.backend)):
        value = saved.get(key, "pyro" if key == "backend" else None)
        if key == "model" and given is not None and _same_source(given, saved.get("source")):
            given = value  # the pair's reference (path/to/my_pair.py:build) names the saved pair
        if given is not None and given != value:
            raise RunDirectoryError(f"--resume: {args.out} holds a {key} {value!r} run, not {given!r}",
                                    f"drop the {key} (it is read from {results.CONFIG}) or pick "
                                    "another --out for a new run")
        setattr(args, key, value)
    return saved


def _same_source(reference: str, source: dict[str, Any] | None) -> bool:
    """``reference`` (as given to train) names the pair a run recorded in its ``source``."""
    from ppl_dgm import user_pairs

    if not source or not user_pairs.is_reference(reference):
        return False
    target, attribute = user_pairs.split_reference(reference)
    if attribute != source.get("attribute"):
        return False
    if source.get("kind") == "file":
        return str(Path(target).expanduser().resolve()) == source.get("path")
    return target == source.get("module")


def _resumed_config(args: argparse.Namespace, saved: dict[str, Any], config: Any) -> Any:
    """The saved configuration with the explicitly given options that a resumed run may change
    (:data:`ppl_dgm.rundir.RESUMABLE_CHANGES`, reported); any other given option that differs
    from the saved run is refused, listing the differences."""
    from ppl_dgm.rundir import RESUMABLE_CHANGES, identity_differences

    saved = dict(saved)
    given = {name: getattr(config, name) for name in TRAIN_FLAGS
             if getattr(args, name, None) is not None and hasattr(config, name)}
    if args.set:
        given["hparams"] = {**saved.get("hparams", {}), **_key_values(args.set, "--set")}
    if args.data_option:
        given["dataset_options"] = {**saved.get("dataset_options", {}),
                                    **_key_values(args.data_option, "--data-option")}
    if args.no_include_labelled:
        given["include_labelled_in_unlabelled"] = False
    if args.validate:
        given["validate"] = True
    differences = identity_differences({k: saved.get(k) for k in given if k in saved},
                                       {k: v for k, v in given.items() if k in saved})
    if differences:
        raise RunDirectoryError(
            f"--resume would change the run in {args.out}: " + "; ".join(differences),
            f"only {RESUMABLE_FLAGS} may change "
            "on resume; start a new run with another --out for the rest")
    if given.get("epochs") is not None:
        from ppl_dgm.rundir import check_resume_epochs

        check_resume_epochs(args.out, given["epochs"])
    for key in RESUMABLE_CHANGES:
        if key in given and given[key] != saved.get(key):
            print(f"resume: {key} {saved.get(key)!r} -> {given[key]!r}", file=sys.stderr)
            saved[key] = given[key]
    return type(config).from_dict(saved)


def cmd_train(args: argparse.Namespace) -> int:
    saved_run = _resume_target(args)
    spec = registry.resolve_spec(args.model, args.backend,
                                 saved_run.get("source") if saved_run is not None else None)
    # before a trainer imports torch or JAX (XLA reads its flags once, when it starts)
    args.threads = apply_threads(default_threads() if args.threads is None else args.threads)
    torchrun = all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if torchrun and spec.backend == "numpyro":
        raise ValueError("torchrun launches the Pyro backend only; the NumPyro backend shards the "
                         "batch over the devices of one process: run it with --distributed alone")
    Trainer = trainer_class(spec.backend, args.distributed or torchrun)
    overrides = {name: getattr(args, name) for name in TRAIN_FLAGS}
    overrides["dataset_options"] = _key_values(args.data_option, "--data-option") or None
    config = resolve(spec, overrides, _key_values(args.set, "--set"))
    if args.no_include_labelled:
        config.include_labelled_in_unlabelled = False
    if args.validate:
        config.validate = True
    out = Path(args.out or f"runs/{config.model}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    if saved_run is not None:
        # a continued run may train longer (--epochs, --max-minutes), elsewhere (--device, --threads)
        # or evaluate in smaller batches (--eval-batch-size); anything else is refused
        config = _resumed_config(args, saved_run, config)
    elif os.environ.get("RANK", "0") == "0":  # checked again under the run's lock by fit()
        check_new_run(out)
    stamps = rundir.record_stamps(out) if saved_run is not None else None
    try:
        summary = Trainer(config, out, progress=not args.no_progress).fit(resume=args.resume)
    finally:
        if stamps is not None and os.environ.get("RANK", "0") == "0":
            _set_aside_stale(out, stamps)
    if not summary:  # a data-parallel process other than rank 0: rank 0 writes and reports
        return 0
    print(f"run directory: {out}")
    if summary.get("test_error") is not None:
        print(f"test accuracy: {1 - summary['test_error']:.4f}  (test error {summary['test_error']:.4f})")
    if summary.get("test_sequence_error") is not None:
        print(f"test sequence error: {summary['test_sequence_error']:.4f}")
    if summary.get("test_elbo") is not None:
        print(f"test ELBO: {summary['test_elbo']:.2f} nats per example")
    return 0


def _set_aside_stale(out: Path, stamps: dict[str, tuple[int, int]]) -> None:
    """After ``--resume``: the evaluation and samples of the earlier checkpoint moved aside
    (:func:`ppl_dgm.rundir.set_aside_stale_records`), said on stderr."""
    try:
        folder = rundir.set_aside_stale_records(out, stamps)
    except (OSError, PplDgmError) as err:  # never hides the training's own outcome
        print(f"ppl-dgm: warning: the evaluation records of the earlier checkpoint in {out} could "
              f"not be moved aside ({describe(err)[0]}); they describe that checkpoint, not this "
              "run's summary", file=sys.stderr)
        return
    if folder is not None:
        names = ", ".join(sorted(p.name for p in folder.iterdir()))
        print(f"resume: moved {names} to {folder}: they describe the checkpoint before this resume "
              "(run evaluate or sample again for the new one)", file=sys.stderr)


READER_THREADS_HELP = "CPU threads of torch and XLA (0: every core; default $OMP_NUM_THREADS, else 1)"


def _reader_threads(args: argparse.Namespace) -> None:
    """``--threads`` of evaluate and sample, applied before torch or JAX start working."""
    threads = default_threads() if args.threads is None else args.threads
    try:
        apply_threads(threads)
    except ValueError as err:
        raise UserError(str(err), "e.g. --threads 1") from None
    from ppl_dgm.evaluate import run_backend  # imports neither torch nor JAX

    try:  # a NumPyro run: XLA's pool sized now (the run's own --threads would be used otherwise)
        backend = run_backend(args.run_dir)
    except (OSError, ValueError):  # not a run directory: the command itself says so
        backend = None
    if backend == "numpyro":
        from ppl_dgm.threads import start_xla

        start_xla(threads)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ppl_dgm.evaluate import check_evaluation_options, pareto_caution

    check_evaluation_options(iw_samples=args.iw_samples, chunk_size=args.chunk_size,
                             subset=args.subset, classify_samples=args.classify_samples,
                             seed=args.seed, bn_stats=args.bn_stats)  # before anything is loaded
    _reader_threads(args)
    from ppl_dgm.evaluate import evaluate_run

    record = evaluate_run(args.run_dir, iw_samples=args.iw_samples, chunk_size=args.chunk_size,
                          subset=args.subset, classify_samples=args.classify_samples,
                          device=args.device, seed=args.seed, bn_stats=args.bn_stats)
    if record.get("bn_stats") == "train":
        print(f"bn_stats: train (one pass over {record['bn_stats_points']} training images, "
              f"{record['bn_stats_layers']} batch-norm layers)")
    for key in ("test_error", "test_sequence_error", "test_log_likelihood", "test_elbo",
                "pareto_k_mean", "pareto_k_fraction_above_0.7"):
        if record.get(key) is None:
            continue
        beside = ""
        share = record.get("pareto_k_fraction_above_0.7")
        if key == "test_log_likelihood":
            beside = (f" (IW-{record['iw_samples']} on {record['n_test_evaluated']} test points; "
                      + (f"Pareto k > 0.7 for {share:.1%} of them)" if share is not None
                         else "too few samples for Pareto k)"))
        print(f"{key}: {record[key]:.4f}{beside}")
    caution = pareto_caution(record)
    if caution:
        print(caution)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    _reader_threads(args)
    from ppl_dgm.evaluate import sample_grid

    path = sample_grid(args.run_dir, args.output, per_class=args.per_class, device=args.device,
                       seed=args.seed)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppl-dgm", description=__doc__, epilog=EXIT_CODES_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line (also: "
                             "PPL_DGM_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list the model/guide pairs, or show one's defaults",
                            description="Without NAME: the registered pairs and those of installed "
                                        "packages (entry point group ppl_dgm.models). With NAME (a "
                                        "listed name or path/to/my_pair.py:build): the pair's "
                                        "effective hyperparameters and training defaults.")
    models.add_argument("name", nargs="?", metavar="NAME",
                        help="a listed name, path/to/my_pair.py:build or package.module:build")
    models.add_argument("--backend", choices=["pyro", "numpyro"], default=None,
                        help="show this backend only (default: every backend the name has)")
    models.add_argument("--preset", default=None, metavar="PRESET",
                        help="show the preset's settings (an authors' script) and every difference "
                             "from that script that remains (default: none)")
    models.set_defaults(func=cmd_models)

    train = sub.add_parser(
        "train", help="train a model/guide pair (registered, or your own path/to/my_pair.py:build)",
        description="Train a model/guide pair. An option left out takes the pair's own training "
                    "default ('ppl-dgm models MODEL' prints them all), else the TrainConfig default "
                    "shown after 'else'. Your own pair: MODEL = path/to/my_pair.py:build or "
                    "package.module:build (the contract: ppl_dgm/contract.py).")
    train.add_argument("model", nargs="?", metavar="MODEL",
                       help="a name of 'ppl-dgm models', path/to/my_pair.py:build or "
                            "package.module:build (with --resume: read from the run)")
    for name, kwargs in TRAIN_FLAGS.items():
        train.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                           **{**kwargs, "help": _flag_help(name, kwargs)})
    train.add_argument("--out", help="run directory (default runs/MODEL-DATASET-TIME)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint; the model, backend "
                            f"and settings are read from the run, and only {RESUMABLE_FLAGS} may "
                            "change (other differences are refused)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a network hyperparameter, e.g. --set z_dim=32")
    train.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                       help="options of the data set (e.g. n_digits=2 for mnist-sequence)")
    train.add_argument("--no-include-labelled", action="store_true",
                       help="keep the labelled points out of the unlabelled set")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bar (for logs and scripts)")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel training: DDP over the processes torchrun starts (Pyro; "
                            "detected from torchrun's environment), or the batch sharded over the "
                            "devices JAX sees (NumPyro); see ppl_dgm/train/distributed.py")
    train.add_argument("--validate", action="store_true",
                       help="Pyro's argument/shape checks (slower; for writing new pairs)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="test error and importance-weighted log-likelihood (either backend)")
    ev.add_argument("run_dir", help="a run directory written by train (either backend)")
    ev.add_argument("--iw-samples", type=int, default=5000,
                    help="importance samples per test point for log p(x) (0: skip it; default 5000)")
    ev.add_argument("--chunk-size", type=int, default=500,
                    help="particles per vectorised chunk (default 500; lower it when memory is short)")
    ev.add_argument("--subset", type=int, default=None,
                    help="evaluate the first N test points only (log-likelihood; default all)")
    ev.add_argument("--classify-samples", type=int, default=None,
                    help="samples averaged by the classifier, e.g. 100 of a for ADGM (default: the "
                         "run's own)")
    ev.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    ev.add_argument("--bn-stats", default="running", metavar="{running,train}",
                    help="batch-norm statistics of every figure: running (the averages kept in "
                         "training) or train (one pass over the run's training images as one "
                         "batch, as the LVAE authors' evaluation; the checkpoint is not changed) "
                         "(default running)")
    ev.add_argument("--threads", type=int, default=None, help=READER_THREADS_HELP)
    ev.set_defaults(func=cmd_evaluate)

    sa = sub.add_parser("sample", help="PNG grid of (class-conditional) samples (either backend)")
    sa.add_argument("run_dir", help="a run directory written by train (either backend)")
    sa.add_argument("--output", default=None, help="the PNG to write (default RUN_DIR/samples.png)")
    sa.add_argument("--per-class", type=int, default=10, help="samples per class or cluster "
                                                               "(default 10)")
    sa.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    sa.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    sa.add_argument("--threads", type=int, default=None, help=READER_THREADS_HELP)
    sa.set_defaults(func=cmd_sample)

    from ppl_dgm.sweep import add_parser as add_sweep_parser

    add_sweep_parser(sub)

    from ppl_dgm.compare import add_parser as add_compare_parser

    add_compare_parser(sub)

    from ppl_dgm.reproduce import add_parser as add_reproduce_parser

    add_reproduce_parser(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ppl-dgm")
    except PackageNotFoundError:
        return "unknown (not installed)"


def debug_requested(args: argparse.Namespace) -> bool:
    """``--debug`` or ``PPL_DGM_DEBUG`` set to anything but empty or 0."""
    return bool(getattr(args, "debug", False)) or os.environ.get("PPL_DGM_DEBUG", "") not in ("", "0")


def _format_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:
    """A pair's warnings (``ppl_dgm.contract.PairWarning``) as one line; the others as Python's."""
    from ppl_dgm.contract import PairWarning

    if issubclass(category, PairWarning):
        return f"ppl-dgm: warning: {message}\n"
    return _PYTHON_FORMATWARNING(message, category, filename, lineno, line)


_PYTHON_FORMATWARNING = warnings.formatwarning


def _stdout_closed() -> bool:
    """After a ``BrokenPipeError``: whether it is the standard output that was closed (e.g. ``ppl-dgm
    models | head``). If so, the rest of the output goes to ``os.devnull`` (so that the
    interpreter's last flush is quiet too) and the command stops quietly with
    :data:`~ppl_dgm.errors.EXIT_BROKEN_PIPE` (141, what a shell reports for a program stopped by
    SIGPIPE, so that ``set -o pipefail`` still sees the output was cut short)."""
    import select

    try:
        sys.stdout.flush()
        poll = select.poll()  # the data may have been dropped: ask whether the pipe has a reader
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        if not any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0)):
            return False  # another pipe broke: an ordinary error
    except BrokenPipeError:
        pass
    except (OSError, ValueError, AttributeError):
        return False
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a replaced sys.stdout)
        pass
    return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _format_warning
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except (Exception, KeyboardInterrupt) as err:  # one line each; the exit status says which kind
        if isinstance(err, BrokenPipeError) and _stdout_closed():
            return EXIT_BROKEN_PIPE
        if debug_requested(args):
            raise
        message, code = describe(err)
        from ppl_dgm.contract import error_origin

        origin = None if isinstance(err, KeyboardInterrupt) else error_origin(err)
        if origin:  # an error of a pair's own code: where it arose, not "a bug of ppl-dgm"
            if not isinstance(err, PplDgmError):  # Pyro appends the trace's shapes: first line
                message = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
            message += f" (at {origin}; --debug shows the traceback)"
        print(f"ppl-dgm: error: {message}", file=sys.stderr)
        return code
    finally:
        warnings.formatwarning = _PYTHON_FORMATWARNING


if __name__ == "__main__":
    sys.exit(main())
