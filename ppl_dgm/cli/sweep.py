"""``ppl-dgm sweep``: parse, call :func:`ppl_dgm.sweep`, print the aggregate."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ppl_dgm import sweeps
from ppl_dgm.cli.common import add_train_options, key_values, train_options
from ppl_dgm.config import parse_value
from ppl_dgm.errors import EXIT_RUNS_FAILED, UserError
from ppl_dgm.sweeps import LOG, OWN_FLAGS, SWEEP_NC, sweep


def _values(text: str, flag: str) -> list[Any]:
    values = [parse_value(v.strip()) for v in text.split(",") if v.strip()]
    if not values:
        raise UserError(f"{flag} {text!r} lists no values", "write e.g. 20,100")
    if len(set(map(str, values))) != len(values):
        raise UserError(f"{flag} {text!r} repeats a value", "give each value once")
    return values


def _grid(items: list[str] | None) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for item in items or []:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise UserError(f"--grid expects KEY=V1,V2, got {item!r}", "e.g. --grid lr=0.001,0.0003")
        if key in grid:
            raise UserError(f"--grid {key}: sweep it once only")
        grid[key] = _values(values, f"--grid {key}")
    return grid


def cmd_sweep(args: argparse.Namespace) -> int:
    options = train_options(args, exclude=OWN_FLAGS)
    options["dataset_options"] = key_values(args.data_option, "--data-option") or None
    out = args.out
    ds = sweep(args.model, seeds=args.seeds,
               labels=_values(args.labels, "--labels") if args.labels is not None else None,
               grid=_grid(args.grid), workers=args.workers, ray=args.ray, threads=args.threads,
               retries=args.retries, out=out, hparams=key_values(args.set, "--set"), **options)
    folder = ds.attrs["out"]
    with open(f"{folder}/sweep.md") as f:
        print(f.read())
    print(f"wall time {ds.attrs['wall_seconds']:.1f} s for {ds.attrs['run_attempts']} run attempts "
          f"taking {ds.attrs['run_seconds_sum']:.1f} s in all; aggregate: {folder}/{SWEEP_NC}")
    failed = list(ds.attrs["failed"])
    if failed:
        print(f"ppl-dgm: error: {len(failed)} run(s) failed after retrying: {', '.join(failed)} "
              f"(logs: RUN/{LOG})", file=sys.stderr)
        return EXIT_RUNS_FAILED
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``sweep`` on the ``ppl-dgm`` sub-command parsers."""
    sw = subparsers.add_parser(
        "sweep", help="a grid of runs (seeds x labels x ...) on local workers or Ray, aggregated",
        description=sweeps.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sw.add_argument("model")
    sw.add_argument("--seeds", default="0-4", help="seeds to run: 0-4, 0,3,7 or 0-2,10 (default 0-4)")
    sw.add_argument("--labels", default=None,
                    help="labelled-set sizes to sweep, e.g. 20,100 (default: the model's, not swept)")
    sw.add_argument("--grid", action="append", metavar="KEY=V1,V2",
                    help="another swept option: a train option (lr=0.001,0.0003) or a network "
                         "hyperparameter (z_dim=16,32); repeatable")
    sw.add_argument("--workers", type=int, default=1,
                    help="local worker processes running at once (default 1)")
    sw.add_argument("--ray", metavar="ADDRESS", default=None,
                    help="run on the Ray cluster at ADDRESS ('auto', 'ray://host:10001', ...) instead "
                         "of local workers (needs the ray extra)")
    sw.add_argument("--threads", type=int, default=1,
                    help="CPU threads of each run (default 1: one job per core, one thread each)")
    sw.add_argument("--retries", type=int, default=1,
                    help="how often a failed run is tried again (default 1)")
    sw.add_argument("--out", default=None, help="the sweep's folder (default runs/sweep-MODEL-TIME)")
    add_train_options(sw, exclude=OWN_FLAGS, suffix=" (each run)")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="a network hyperparameter of every run, e.g. --set z_dim=32")
    sw.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                    help="options of the data set (passed to each run)")
    sw.set_defaults(func=cmd_sweep)
    return sw
