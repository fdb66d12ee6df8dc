"""``ppl-dgm compare``: parse, call :func:`ppl_dgm.compare`, print the table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ppl_dgm import comparison
from ppl_dgm.cli.common import add_train_options, key_values, train_options
from ppl_dgm.comparison import compare
from ppl_dgm.errors import UserError

#: Training options that compare sets per arm (not shared options), and renyi_alpha (an arm's
#: objective renyi:ALPHA:K carries it).
_NOT_SHARED = ("seed", "elbo", "backend", "epochs", "max_minutes", "renyi_alpha")


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(item) for item in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``compare`` on the ``ppl-dgm`` sub-command parsers."""
    parser = subparsers.add_parser(
        "compare", help="compare inference algorithms: arms x seeds, one folder of results",
        description=comparison.__doc__.split("\n\n")[0] + "\n\nExamples:\n"
        "  ppl-dgm compare m2 --objectives trace_enum,trace,trace_graph --seeds 0,1,2 --minutes 5\n"
        "  ppl-dgm compare vae lvae --objectives trace,iwae:5 --epochs 10\n"
        "  ppl-dgm compare m2 --objectives trace_enum,trace_graph --backends pyro,numpyro ...\n"
        "  ppl-dgm compare --report-only --out DIR   # rebuild the table and figure",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="names of 'ppl-dgm models', or your own pair as "
                             "path/to/my_pair.py:build")
    parser.add_argument("--objectives", type=_csv, default=None,
                        help="comma-separated objectives (trace_enum, trace, trace_graph, "
                             "trace_meanfield, renyi, rws, iwae:K, renyi:ALPHA:K, rws:K; see "
                             "'ppl-dgm train --help')")
    parser.add_argument("--backends", type=_csv, default=["pyro"],
                        help="comma-separated: pyro, numpyro (default pyro)")
    parser.add_argument("--seeds", type=_ints, default=None,
                        help="comma-separated (default 0; with --report-only: every seed found)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training wall time per arm and seed (stops after the epoch that "
                             "passes it)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per arm and seed")
    parser.add_argument("--iw-samples", type=int, default=1000,
                        help="particles K of the IW log-likelihood (0: skip; default 1000)")
    parser.add_argument("--iw-subset", type=int, default=1000,
                        help="first N test points for the IW log-likelihood (default 1000)")
    parser.add_argument("--grad-draws", type=int, default=50,
                        help="gradient draws of the SNR diagnostics (0: skip; default 50)")
    parser.add_argument("--out", default="compare", help="output folder (default ./compare)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: rebuild comparison.* from the runs in --out")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="network hyperparameter for every arm, e.g. --set z_dim=32")
    parser.add_argument("--no-progress", action="store_true")
    add_train_options(parser, exclude=_NOT_SHARED)
    parser.set_defaults(func=cmd_compare)
    return parser


def cmd_compare(args: argparse.Namespace) -> int:
    if args.minutes is not None and args.epochs is not None:
        raise UserError("--minutes and --epochs both given", "give one budget per arm")
    if not args.report_only and (not args.models or not args.objectives):
        raise UserError("compare needs MODEL ... and --objectives",
                        "e.g. ppl-dgm compare m2 --objectives trace_enum,trace --epochs 5")
    options = train_options(args, exclude=_NOT_SHARED)
    seeds = args.seeds if args.seeds is not None else ([] if args.report_only else [0])
    ds = compare(args.models, args.objectives or (), backends=args.backends, seeds=seeds,
                 epochs=args.epochs, minutes=args.minutes, out=args.out, options=options,
                 hparams=key_values(args.set, "--set"), iw_samples=args.iw_samples,
                 iw_subset=args.iw_subset, grad_draws=args.grad_draws,
                 progress=not args.no_progress, report_only=args.report_only)
    print((Path(args.out) / "comparison.md").read_text())
    print(f"wrote {', '.join(str(Path(args.out) / f) for f in comparison.FILES)} "
          f"({ds.sizes['arm']} arms x {ds.sizes['seed']} seeds)")
    return 0
