"""The CaGeM study's table and learning curves from evaluated run directories.

    python benchmarks/cagem_report.py benchmarks/results/cagem/cagem_labels100 \
        benchmarks/results/cagem/cagem_labels0 benchmarks/results/cagem/vae \
        --out benchmarks/results/cagem

For every run: training time, epochs, IW log-likelihood (mean and standard error over the test
points), the ELBO, the test error (with labels) or the clustering accuracy (without). For every pair
of runs: the mean per-example difference of the IW estimates on the same test points with its
paired standard error, sd(d) / sqrt(n) -- much smaller than the unpaired one, since the points'
difficulty is shared -- which decides the paper's ordering (labels > unsupervised > no clusters).
Runs evaluated on different points are refused. Writes ``report.md``, ``report.json`` and
``learning_curves.png`` (against training minutes: validation ELBO, KL of the cluster variable y,
validation accuracy of q(y | z1, x) -- classification with labels, clustering without).
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ppl_dgm import results
from ppl_dgm.evaluate import PER_EXAMPLE


def load(run_dir: Path) -> dict[str, Any]:
    """A run's records: name, summary, evaluation, per-example estimates, history."""
    for name in (results.SUMMARY, results.EVALUATION, PER_EXAMPLE, results.HISTORY):
        if not (run_dir / name).is_file():
            raise SystemExit(f"cagem_report: error: {run_dir} has no {name}; train and evaluate it "
                             "first (benchmarks/results/cagem/commands.sh)")
    with xr.open_dataset(run_dir / PER_EXAMPLE) as ds:
        per_example = ds.load()
    return {"name": run_dir.name, "dir": run_dir,
            "summary": results.read_json(run_dir / results.SUMMARY),
            "evaluation": results.read_json(run_dir / results.EVALUATION),
            "ll": per_example["log_likelihood"].values,
            "test_index": per_example["test_index"].values,
            "history": results.read_history(run_dir / results.HISTORY)}


def paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Mean of ll_a - ll_b over the same test points, its paired standard error, and z."""
    if not np.array_equal(a["test_index"], b["test_index"]):
        raise SystemExit(f"cagem_report: error: {a['name']} and {b['name']} were evaluated on "
                         "different test points; evaluate both with the same --subset")
    d = a["ll"] - b["ll"]
    se = float(d.std(ddof=1) / math.sqrt(len(d)))
    return {"a": a["name"], "b": b["name"], "mean_difference": float(d.mean()),
            "paired_se": se, "z": float(d.mean() / se) if se > 0 else math.inf, "n": len(d)}


def row(run: dict[str, Any]) -> dict[str, Any]:
    s, e = run["summary"], run["evaluation"]
    return {"run": run["name"], "model": s["model"], "backend": s["backend"],
            "labels": s["n_labelled"], "epochs": s["epochs"],
            "train_minutes": s["train_seconds"] / 60,
            "iw_samples": e["iw_samples"], "n_test": len(run["ll"]),
            "log_likelihood": float(run["ll"].mean()),
            "log_likelihood_se": float(run["ll"].std(ddof=1) / math.sqrt(len(run["ll"]))),
            "elbo": e.get("test_elbo"), "test_error": e.get("test_error"),
            "clustering_accuracy": e.get("clustering_accuracy"),
            "pareto_k_fraction_above_0.7": e.get("pareto_k_fraction_above_0.7")}


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> str:
    lines = ["| run | model | labels | epochs | train min | IW log-lik (nats) | ELBO | test error "
             "| clustering acc. | Pareto-k > 0.7 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['model']} ({r['backend']}) | {r['labels']} | {r['epochs']} | "
            f"{r['train_minutes']:.1f} | {r['log_likelihood']:.2f} ± {r['log_likelihood_se']:.2f} "
            f"| {_fmt(r['elbo'], '.2f')} | {_fmt(r['test_error'], '.4f')} | "
            f"{_fmt(r['clustering_accuracy'], '.4f')} | "
            f"{_fmt(r['pareto_k_fraction_above_0.7'], '.2f')} |")
    n, k = rows[0]["n_test"], rows[0]["iw_samples"]
    lines += ["", f"IW-{k} on the same {n} test points; ± is the standard error over points.", "",
              "| difference | mean (nats) | paired SE | z |", "| --- | --- | --- | --- |"]
    for p in pairs:
        lines.append(f"| {p['a']} - {p['b']} | {p['mean_difference']:+.3f} | {p['paired_se']:.3f} "
                     f"| {p['z']:+.1f} |")
    return "\n".join(lines) + "\n"


def plot_curves(runs: list[dict[str, Any]], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for run in runs:
        h = run["history"]
        minutes = np.cumsum(h["seconds"].values) / 60
        axes[0].plot(minutes, h["validation_elbo"].values, marker=".", label=run["name"])
        if "kl" in h and "site" in h.coords and "y" in h["site"].values:
            axes[1].plot(minutes, h["kl"].sel(site="y").values, marker=".", label=run["name"])
        if "validation_error" in h:
            axes[2].plot(minutes, 1 - h["validation_error"].values, marker=".",
                         label=f"{run['name']} (classification)")
        if "validation_clustering_accuracy" in h:
            axes[2].plot(minutes, h["validation_clustering_accuracy"].values, marker=".",
                         label=f"{run['name']} (clustering)")
    axes[0].set(xlabel="training minutes", ylabel="validation ELBO (nats, beta = 1)",
                title="learning curves")
    axes[1].set(xlabel="training minutes", ylabel="KL(q(y|z1,x) || p(y)) (nats)",
                title="use of the cluster variable y")
    axes[2].set(xlabel="training minutes", ylabel="validation accuracy",
                title="q(y | z1, x) against the classes")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    results.atomic_write(output, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path,
                        help="evaluated run directories, in the claimed order (best first)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cagem"),
                        help="folder for report.md, report.json, learning_curves.png "
                             "(default benchmarks/results/cagem)")
    args = parser.parse_args(argv)
    runs = [load(r) for r in args.runs]
    rows = [row(r) for r in runs]
    pairs = [paired(a, b) for a, b in itertools.combinations(runs, 2)]
    # the claimed ordering holds when each run beats the next by more than two paired SEs
    ordered = all(paired(a, b)["z"] > 2 for a, b in zip(runs[:-1], runs[1:], strict=True))
    verdict = (f"ordering {' > '.join(r['name'] for r in runs)}: "
               f"{'shown' if ordered else 'not shown'} (each adjacent difference > 2 paired SEs)")
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, pairs) + "\n" + verdict + "\n"
    results.atomic_write(args.out / "report.md", lambda tmp: Path(tmp).write_text(text))
    results.write_json(args.out / "report.json", {"runs": rows, "paired": pairs,
                                                   "ordering_shown": ordered})
    plot_curves(runs, args.out / "learning_curves.png")
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
