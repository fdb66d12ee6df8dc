"""``ppl-dgm models``, ``train``, ``evaluate`` and ``sample``: parse, call :mod:`ppl_dgm.api`,
print."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ppl_dgm import api, registry
from ppl_dgm.cli.common import add_train_options, key_values, train_options
from ppl_dgm.config import OPTIONS, defaults, resolve
from ppl_dgm.errors import UserError
from ppl_dgm.rundir import RESUMABLE_FLAGS
from ppl_dgm.threads import default_threads


# ------------------------------------------------------------------------------------- models
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
            for line in presets.describe(presets.get(spec.name, preset), spec, defaults()):
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
            note = OPTIONS[key].note if key in OPTIONS else None
            print(f"   {mark}{key} = {value!r}" + (f"   ({note})" if note else ""))
    return 0


# -------------------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    options = train_options(args)
    if options.get("threads") is None:
        options["threads"] = default_threads()
    options["dataset_options"] = key_values(args.data_option, "--data-option") or None
    run = api.train(args.model, out=args.out, resume=args.resume,
                    hparams=key_values(args.set, "--set") or None,
                    progress=not args.no_progress, distributed=args.distributed, **options)
    if os.environ.get("RANK", "0") != "0":  # a data-parallel process: rank 0 writes and reports
        return 0
    summary = run.summary
    print(f"run directory: {run.path}")
    if summary.get("test_error") is not None:
        print(f"test accuracy: {1 - summary['test_error']:.4f}  (test error {summary['test_error']:.4f})")
    if summary.get("test_sequence_error") is not None:
        print(f"test sequence error: {summary['test_sequence_error']:.4f}")
    if summary.get("test_elbo") is not None:
        print(f"test ELBO: {summary['test_elbo']:.2f} nats per example")
    return 0


# --------------------------------------------------------------------------- evaluate, sample
def cmd_evaluate(args: argparse.Namespace) -> int:
    from ppl_dgm.evaluate import pareto_caution

    threads = default_threads() if args.threads is None else args.threads
    record = api.load(args.run_dir).evaluate(
        iw_samples=args.iw_samples, chunk_size=args.chunk_size, subset=args.subset,
        classify_samples=args.classify_samples, device=args.device, seed=args.seed,
        bn_stats=args.bn_stats, threads=threads)
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
    threads = default_threads() if args.threads is None else args.threads
    path = api.load(args.run_dir).sample(args.output, per_class=args.per_class,
                                         device=args.device, seed=args.seed, threads=threads)
    print(f"wrote {path}")
    return 0


READER_THREADS_HELP = "CPU threads of torch and XLA (0: every core; default $OMP_NUM_THREADS, else 1)"


def add_parsers(sub: Any) -> None:
    """``models``, ``train``, ``evaluate`` and ``sample`` on the sub-command parsers."""
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
        description="Train a model/guide pair (the command form of ppl_dgm.train). An option "
                    "left out takes the pair's own training default ('ppl-dgm models MODEL' "
                    "prints them all), else the default shown after 'else'. Your own pair: "
                    "MODEL = path/to/my_pair.py:build or package.module:build (the contract: "
                    "ppl_dgm/contract.py).")
    train.add_argument("model", nargs="?", metavar="MODEL",
                       help="a name of 'ppl-dgm models', path/to/my_pair.py:build or "
                            "package.module:build (with --resume: read from the run)")
    add_train_options(train)
    train.add_argument("--out", help="run directory (default runs/MODEL-DATASET-TIME)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint; the model, backend "
                            f"and settings are read from the run, and only {RESUMABLE_FLAGS} may "
                            "change (other differences are refused)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a network hyperparameter, e.g. --set z_dim=32")
    train.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                       help="options of the data set (e.g. n_digits=2 for mnist-sequence)")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bar (for logs and scripts)")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel training: DDP over the processes torchrun starts (Pyro; "
                            "detected from torchrun's environment), or the batch sharded over the "
                            "devices JAX sees (NumPyro); see ppl_dgm/training/distributed.py")
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
