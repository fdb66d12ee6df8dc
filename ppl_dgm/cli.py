"""``ppl-dgm``: train, evaluate and sample registered model/guide pairs.

    ppl-dgm models
    ppl-dgm train m2 --dataset digits --labels 100 --epochs 30 --out runs/m2-digits
    ppl-dgm evaluate runs/m2-digits --iw-samples 5000
    ppl-dgm sample runs/m2-digits
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ppl_dgm import registry, results
from ppl_dgm.config import parse_value, resolve

# CLI flags that map one-to-one onto TrainConfig fields (None = keep the registered default).
TRAIN_FLAGS: dict[str, dict[str, Any]] = {
    "dataset": dict(help="digits, mnist, mnist-sequence, or a path to an .npz (default: digits)"),
    "data_dir": dict(help="folder holding mnist.npz (else $PPL_DGM_DATA, then the user cache)"),
    "labels": dict(type=int, help="number of labelled training points, balanced (default 100)"),
    "epochs": dict(type=int),
    "batch_size": dict(type=int, help="unlabelled (or plain) batch size"),
    "labelled_batch_size": dict(type=int),
    "seed": dict(type=int),
    "warmup_epochs": dict(type=float, help="epochs of linear KL warm-up from 0 to 1"),
    "device": dict(help="auto (CUDA when present), cpu or cuda"),
    "lr": dict(type=float),
    "optimizer": dict(choices=["adam", "rmsprop"]),
    "lr_decay": dict(type=float), "lr_decay_every": dict(type=int), "min_lr": dict(type=float),
    "clip_norm": dict(type=float, help="global gradient-norm clipping"),
    "clip_value": dict(type=float, help="element-wise gradient clipping, before clip_norm"),
    "alpha": dict(type=float, help="classification weight (default 0.1 * N / N_labelled)"),
    "num_particles": dict(type=int, help="Monte Carlo samples per step (vectorised)"),
    "elbo": dict(choices=["trace_enum", "trace", "trace_graph", "trace_meanfield", "renyi"]),
    "validation_size": dict(type=int),
    "steps_per_epoch": dict(type=int, help="cap on the optimiser steps of an epoch"),
    "classify_samples": dict(type=int, help="samples averaged by the classifier at evaluation"),
    "eval_batch_size": dict(type=int, help="points per evaluation batch (lower it when memory is short)"),
    "free_bits": dict(type=float, help="free bits per latent site (unsupervised models)"),
    "max_minutes": dict(type=float, help="stop after the epoch that passes this training time"),
    "backend": dict(choices=["pyro", "numpyro"], help="default pyro"),
}


def _key_values(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    out = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key] = parse_value(value)
    return out


def cmd_models(args: argparse.Namespace) -> int:
    for spec in registry.all_specs():
        print(f"{spec.name:<10} {spec.backend:<8} {spec.task:<16} {spec.description}")
    return 0


def trainer_class(backend: str) -> Any:
    """The trainer of a backend, imported lazily (the Pyro side never imports JAX, nor the reverse)."""
    if backend == "numpyro":
        from ppl_dgm.train.numpyro_loop import NumPyroTrainer

        return NumPyroTrainer
    from ppl_dgm.train.loop import Trainer

    return Trainer


def cmd_train(args: argparse.Namespace) -> int:
    spec = registry.get(args.model, args.backend or "pyro")
    Trainer = trainer_class(spec.backend)
    overrides = {name: getattr(args, name) for name in TRAIN_FLAGS}
    overrides["dataset_options"] = _key_values(args.data_option, "--data-option") or None
    config = resolve(spec, overrides, _key_values(args.set, "--set"))
    if args.no_include_labelled:
        config.include_labelled_in_unlabelled = False
    if args.validate:
        config.validate = True
    out = Path(args.out or f"runs/{config.model}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.resume:
        saved = results.read_json(out / results.CONFIG)
        # a continued run may train longer (--epochs, --max-minutes), elsewhere (--device) or
        # evaluate in smaller batches (--eval-batch-size)
        for key in ("epochs", "max_minutes", "device", "eval_batch_size"):
            if getattr(args, key) is not None:
                saved[key] = getattr(args, key)
        config = type(config).from_dict(saved)
    elif (out / getattr(Trainer, "checkpoint_name", results.CHECKPOINT)).exists():
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or pick --out")
    summary = Trainer(config, out, progress=not args.no_progress).fit(resume=args.resume)
    print(f"run directory: {out}")
    if summary.get("test_error") is not None:
        print(f"test accuracy: {1 - summary['test_error']:.4f}  (test error {summary['test_error']:.4f})")
    if summary.get("test_sequence_error") is not None:
        print(f"test sequence error: {summary['test_sequence_error']:.4f}")
    if summary.get("test_elbo") is not None:
        print(f"test ELBO: {summary['test_elbo']:.2f} nats per example")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ppl_dgm.evaluate import evaluate_run

    record = evaluate_run(args.run_dir, iw_samples=args.iw_samples, chunk_size=args.chunk_size,
                          subset=args.subset, classify_samples=args.classify_samples,
                          device=args.device, seed=args.seed)
    for key in ("test_error", "test_sequence_error", "test_log_likelihood", "test_elbo",
                "pareto_k_mean", "pareto_k_fraction_above_0.7"):
        if record.get(key) is not None:
            print(f"{key}: {record[key]:.4f}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from ppl_dgm.evaluate import sample_grid

    path = sample_grid(args.run_dir, args.output, per_class=args.per_class, device=args.device,
                       seed=args.seed)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppl-dgm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("models", help="list the registered model/guide pairs").set_defaults(
        func=cmd_models)

    train = sub.add_parser("train", help="train a registered model")
    train.add_argument("model")
    for name, kwargs in TRAIN_FLAGS.items():
        train.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **kwargs)
    train.add_argument("--out", help="run directory (default runs/MODEL-DATASET-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a network hyperparameter, e.g. --set z_dim=32")
    train.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                       help="options of the data set (e.g. n_digits=2 for mnist-sequence)")
    train.add_argument("--no-include-labelled", action="store_true",
                       help="keep the labelled points out of the unlabelled set")
    train.add_argument("--no-progress", action="store_true")
    train.add_argument("--validate", action="store_true",
                       help="Pyro's argument/shape checks (slower; for writing new pairs)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="test error and importance-weighted log-likelihood (either backend)")
    ev.add_argument("run_dir")
    ev.add_argument("--iw-samples", type=int, default=5000)
    ev.add_argument("--chunk-size", type=int, default=500, help="particles per vectorised chunk")
    ev.add_argument("--subset", type=int, default=None,
                    help="evaluate the first N test points only (log-likelihood)")
    ev.add_argument("--classify-samples", type=int, default=None,
                    help="samples averaged by the classifier (e.g. 100 of a for ADGM)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=cmd_evaluate)

    sa = sub.add_parser("sample", help="PNG grid of (class-conditional) samples (either backend)")
    sa.add_argument("run_dir")
    sa.add_argument("--output", default=None, help="default RUN_DIR/samples.png")
    sa.add_argument("--per-class", type=int, default=10)
    sa.add_argument("--device", default="auto")
    sa.add_argument("--seed", type=int, default=0)
    sa.set_defaults(func=cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        print(f"ppl-dgm: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
