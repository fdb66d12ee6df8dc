"""``ppl-dgm reproduce``: parse, call :func:`ppl_dgm.reproduce`, print the figures."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ppl_dgm import reproduction
from ppl_dgm.cli.common import key_values
from ppl_dgm.reproduction import CLAIMS, REPORT_MD, format_figure, reproduce


def cmd_reproduce(args: argparse.Namespace) -> int:
    report = reproduce(args.claim, args.minutes, device=args.device, backend=args.backend,
                       out=args.out, seeds=args.seeds, models=args.models,
                       iw_samples=args.iw_samples, iw_subset=args.iw_subset,
                       bn_stats=args.bn_stats, dataset=args.dataset,
                       data_dir=args.data_dir, hparams=key_values(args.set, "--set"),
                       config=key_values(args.config, "--config"), progress=not args.no_progress)
    out = Path(args.out or Path("runs") / "reproduce" / args.claim)
    for model, row in report["results"].items():
        mean = row["spread"]["mean"]
        print(f"{model}: {report['figure']} {format_figure(mean, report['metric'])} over "
              f"{row['spread']['n']} run(s); paper {format_figure(row['paper'], report['metric'])}")
    print(f"report: {out / REPORT_MD}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``reproduce`` on the ``ppl-dgm`` sub-command parsers."""
    parser = subparsers.add_parser(
        "reproduce", help="run a paper's claim within a time budget and write a report",
        description=reproduction.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("claim", help=f"one of {', '.join(CLAIMS)}")
    parser.add_argument("--minutes", type=float, required=True,
                        help="training time of every run (model x seed); a larger value on the "
                             "same --out continues the runs")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda when a GPU is present, else cpu), cpu, cuda or cuda:N "
                             "(default auto)")
    parser.add_argument("--backend", default="auto", choices=["auto", "pyro", "numpyro"],
                        help="default auto: the faster backend of the model measured on this "
                             "kind of device (benchmarks/results/throughput), else numpyro on a "
                             "GPU and pyro on a CPU")
    parser.add_argument("--out", default=None, help="report folder (default runs/reproduce/CLAIM)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds of the labelled subset and the runs (default 0)")
    parser.add_argument("--models", nargs="+", default=None,
                        help="a subset of the claim's models (default: all of them)")
    parser.add_argument("--iw-samples", type=int, default=None,
                        help="importance samples of the log-likelihood claims (default 5000 on a "
                             "GPU, 0 on a CPU: the test ELBO is reported)")
    parser.add_argument("--iw-subset", type=int, default=None,
                        help="estimate the log-likelihood on the first N test points only (a CPU "
                             "evaluates about 1-2 points per second with 5000 samples; default: "
                             "all)")
    parser.add_argument("--bn-stats", default="running", choices=["running", "train"],
                        help="batch-norm statistics of the log-likelihood evaluation: the running "
                             "averages, or one pass over the training set (the LVAE authors'; "
                             "'ppl-dgm evaluate --bn-stats') (default running)")
    parser.add_argument("--dataset", default=None,
                        help="another data set (smoke tests; marked as a deviation in the report)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding the data (else $PPL_DGM_DATA, then the user cache)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a network hyperparameter (a deviation)")
    parser.add_argument("--config", action="append", metavar="KEY=VALUE",
                        help="override a training setting, e.g. steps_per_epoch=10 (a deviation; "
                             "epochs may grow on a later call)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=cmd_reproduce)
    return parser
