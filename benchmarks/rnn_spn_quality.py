"""RNN-SPN quality runs on a fixed budget: RNN-SPN vs FFN-SPN vs CNN, and the down-sampling study.

Every run goes through the CLI (``ppl-dgm train MODEL --dataset mnist-sequence ...``) with the same
budget (``--epochs`` x ``--steps-per-epoch`` optimiser steps of 100 canvases), one torch thread, and
the registered defaults (RMSprop 5e-4, batch 100, gradient norm clipped at 5). The run directories
(checkpoints) go to ``--runs``; the small outputs (``results.json``, ``results.md``, each run's
``summary.json`` and a glimpse figure) to ``--out``.

    python benchmarks/rnn_spn_quality.py --epochs 1 --steps-per-epoch 500 \
        --models rnn-spn cnn-seq ffn-spn --runs runs/rnn_spn/main \
        --out benchmarks/results/rnn_spn/main

``--report-only`` tabulates finished runs (e.g. runs continued with ``ppl-dgm train --resume``)
without training.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ppl_dgm.results import read_history, read_json, write_json

PAPER = {"rnn-spn": 0.015, "ffn-spn": 0.020, "cnn-seq": 0.029}


def run_one(name: str, model: str, args: argparse.Namespace, extra: list[str]) -> dict:
    out = Path(args.runs) / name
    cmd = ["ppl-dgm", "train", model, "--dataset", "mnist-sequence", "--epochs", str(args.epochs),
           "--steps-per-epoch", str(args.steps_per_epoch), "--seed", str(args.seed),
           "--device", args.device, "--no-progress", "--out", str(out), *extra]
    for option in args.data_option or []:
        cmd += ["--data-option", option]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    wall = None  # unknown for a run made earlier (--report-only)
    if not (out / "summary.json").is_file():
        if args.report_only:
            raise SystemExit(f"{out} holds no finished run to report")
        if out.exists() and not args.resume:
            raise SystemExit(f"{out} exists without a summary; remove it or pass --resume")
        resume = ["--resume"] if (out / "checkpoint.pt").is_file() else []
        subprocess.run(cmd + resume, check=True, env=env)
        wall = time.perf_counter() - started
    summary = read_json(out / "summary.json")
    write_json(Path(args.out) / f"{name}.summary.json", summary)
    ds = read_history(out / "history.nc")
    keys = [k for k in ("loss", "validation_error", "test_error", "seconds") if k in ds]
    history = [{"epoch": int(e), **{k: float(ds[k].sel(epoch=e)) for k in keys}}
               for e in ds["epoch"].values]
    config = summary["config"]
    return {
        "name": name, "model": model,
        "command": None if args.report_only
        else f"OMP_NUM_THREADS={args.threads} " + shlex.join(cmd),
        "config": {k: config.get(k) for k in ("epochs", "steps_per_epoch", "batch_size", "optimizer",
                                               "lr", "rmsprop_alpha", "rmsprop_eps", "clip_norm",
                                               "seed", "hparams", "dataset_options")},
        "steps_per_epoch": summary["steps_per_epoch"],
        "wall_seconds": wall, "train_seconds": summary["train_seconds"],
        "steps": summary["steps"],
        "examples_seen": summary["steps"] * summary["config"]["batch_size"],
        "downsample": summary["config"]["hparams"].get("downsample"),
        "test_digit_error": summary["test_error"],
        "test_sequence_error": summary.get("test_sequence_error"),
        "test_error_at_best_validation": summary.get("test_error_at_best_validation"),
        "paper_digit_error": PAPER.get(model) if "downsample" not in name else None,
        "history": history,
    }


def table(rows: list[dict]) -> str:
    lines = ["| run | down-sampling | steps (x100 canvases) | train s | wall s | test digit error "
             "| test sequence error | paper |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = f"{r['paper_digit_error']:.1%}" if r.get("paper_digit_error") else ""
        wall = "" if r["wall_seconds"] is None else f"{r['wall_seconds']:.0f}"
        lines.append(f"| {r['name']} | {r['downsample']} | {r['steps']} | {r['train_seconds']:.0f} "
                     f"| {wall} | {r['test_digit_error']:.2%} "
                     f"| {r['test_sequence_error']:.2%} | {paper} |")
    return "\n".join(lines) + "\n"


def curve_table(rows: list[dict]) -> str:
    """Test digit error and cumulative training seconds after every epoch of every run: the runs
    compared at equal numbers of optimiser steps."""
    per_run = {}
    for r in rows:
        per_epoch = r.get("steps_per_epoch") or r["steps"] // max(len(r["history"]), 1)
        seconds = 0.0
        for h in r["history"]:
            seconds += h.get("seconds", float("nan"))
            per_run.setdefault(r["name"], {})[h["epoch"] * per_epoch] = (h["test_error"], seconds)
    steps = sorted({s for v in per_run.values() for s in v})
    lines = ["| run | " + " | ".join(f"{s} steps" for s in steps) + " |",
             "|---|" + "---|" * len(steps)]
    for name, v in per_run.items():
        cells = [f"{v[s][0]:.2%} ({v[s][1]:.0f} s)" if s in v else "" for s in steps]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def learning_curves(rows: list[dict], path: Path) -> None:
    """Test digit error after each epoch against optimiser steps, one line per run."""
    from matplotlib.figure import Figure

    from ppl_dgm.results import atomic_write

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for r in rows:
        per_epoch = r.get("steps_per_epoch") or r["steps"] // max(len(r["history"]), 1)
        steps = [h["epoch"] * per_epoch for h in r["history"]]
        ax.plot(steps, [h["test_error"] for h in r["history"]], marker="o", label=r["name"])
    ax.set_xlabel("optimiser steps (batches of 100 canvases)")
    ax.set_ylabel("test single-digit error")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def glimpse_statistics(run_dir: Path, n: int = 2000) -> list[dict[str, float]]:
    """Where the glimpses go on the first ``n`` test canvases, per step: the mean and spread of
    the glimpse centre (normalised coordinates, -1..1 across the canvas) and of its scale
    (square root of |det A|: the glimpse's side as a fraction of the canvas side). A spread
    across canvases means the transform depends on the canvas, not only on the step."""
    import torch

    from ppl_dgm.training.loop import load_run

    trainer = load_run(run_dir, "cpu")
    with torch.no_grad():
        theta, _ = trainer.pair.glimpses(trainer.x_test[:n])
    centre = theta[..., :, 2]
    scale = torch.linalg.det(theta[..., :, :2]).abs().sqrt()
    return [{"step": k + 1,
             "centre_x_mean": float(centre[:, k, 0].mean()), "centre_x_std": float(centre[:, k, 0].std()),
             "centre_y_mean": float(centre[:, k, 1].mean()), "centre_y_std": float(centre[:, k, 1].std()),
             "scale_mean": float(scale[:, k].mean()), "scale_std": float(scale[:, k].std())}
            for k in range(theta.shape[1])]


def glimpse_figure(run_dir: Path, path: Path, n: int = 6) -> None:
    from ppl_dgm.plots import plot_glimpses
    from ppl_dgm.training.loop import load_run

    trainer = load_run(run_dir, "cpu")
    plot_glimpses(trainer.pair, trainer.x_test[:n], trainer.y_test[:n].cpu().numpy(), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["rnn-spn", "ffn-spn", "cnn-seq"])
    parser.add_argument("--study", nargs="*", type=float, default=[],
                        help="RNN-SPN down-sampling factors (3 is the rnn-spn run itself)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps-per-epoch", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-option", action="append")
    parser.add_argument("--runs", default="runs/rnn_spn")
    parser.add_argument("--out", default="benchmarks/results/rnn_spn")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate and plot the finished runs under --runs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    rows = read_json(results_path)["runs"] if results_path.is_file() and not args.report_only else []
    done = {r["name"] for r in rows}
    plan = [(m, m, []) for m in args.models]
    plan += [(f"rnn-spn-downsample{f:g}", "rnn-spn", ["--set", f"downsample={f}"])
             for f in args.study]
    for name, model, extra in plan:
        if name in done:
            continue
        print(f"== {name}", flush=True)
        rows.append(run_one(name, model, args, extra))
        write_json(results_path, {"budget": {"epochs": args.epochs,
                                             "steps_per_epoch": args.steps_per_epoch,
                                             "batch_size": 100, "threads": args.threads},
                                  "python": sys.version.split()[0], "runs": rows})
        (out / "results.md").write_text(table(rows) + "\nTest digit error (cumulative training "
                                        "seconds) after each epoch:\n\n" + curve_table(rows))
        print(json.dumps({k: rows[-1][k] for k in ("name", "wall_seconds", "test_digit_error",
                                                   "test_sequence_error")}), flush=True)
    learning_curves(rows, out / "learning_curves.png")
    stats = {}
    for name in ("rnn-spn", "ffn-spn"):
        run_dir = Path(args.runs) / name
        if name in args.models and (run_dir / "summary.json").is_file():
            glimpse_figure(run_dir, out / f"glimpses_{name.replace('-', '_')}.png")
            stats[name] = glimpse_statistics(run_dir)
    if stats:
        write_json(out / "glimpse_statistics.json", stats)
        print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
