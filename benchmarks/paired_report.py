"""A paired comparison of evaluated run directories: table, paired differences, learning curves.

    python benchmarks/paired_report.py RUN_A RUN_B [RUN_C ...] --out DIR

The runs are given in the claimed order, best first (the CaGeM study: labels > unsupervised > a VAE
without clusters, ``benchmarks/results/cagem_epochs``; the LVAE study: ladder > plain hierarchical
guide, ``benchmarks/results/lvae_authors``); ``--beside`` adds runs outside the ordering.

For every run: epochs, training time, IW log-likelihood (mean and standard error over the test
points), the share of Pareto k > 0.7 beside it (a high share: the figure is a loose lower bound), the
ELBO, the test error (with labels) or the clustering accuracy (without). For every pair of runs: the
mean per-example difference of the IW estimates on the same test points with its paired standard
error, sd(d) / sqrt(n) -- much smaller than the unpaired one, since the points' difficulty is
shared -- which decides the claimed ordering (each adjacent difference > 2 paired SEs). Runs
evaluated on different points or with different numbers of samples are refused. Writes
``report.md``, ``report.json`` and ``learning_curves.png`` (against epochs, so that runs compare at
equal epochs: the held-out ELBO -- validation, else test -- and, where recorded, the KL of a cluster
variable y and the accuracy of q(y | .) against the classes).
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
            raise SystemExit(f"paired_report: error: {run_dir} has no {name}; train and evaluate it "
                             "first (ppl-dgm train, then ppl-dgm evaluate)")
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
        raise SystemExit(f"paired_report: error: {a['name']} and {b['name']} were evaluated on "
                         "different test points; evaluate both with the same --subset")
    k_a, k_b = a["evaluation"]["iw_samples"], b["evaluation"]["iw_samples"]
    if k_a != k_b:
        raise SystemExit(f"paired_report: error: {a['name']} (IW-{k_a}) and {b['name']} (IW-{k_b}) "
                         "were evaluated with different numbers of samples; evaluate both with the "
                         "same --iw-samples")
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
    lines += ["", f"IW-{k} on the same {n} test points; ± is the standard error over points. "
              "Where the share of Pareto k > 0.7 is high the IW figure is a loose lower bound of "
              "log p(x).", "",
              "| difference | mean (nats) | paired SE | z |", "| --- | --- | --- | --- |"]
    for p in pairs:
        lines.append(f"| {p['a']} - {p['b']} | {p['mean_difference']:+.3f} | {p['paired_se']:.3f} "
                     f"| {p['z']:+.1f} |")
    return "\n".join(lines) + "\n"


def plot_curves(runs: list[dict[str, Any]], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histories = [run["history"] for run in runs]
    with_y = any("kl" in h and "site" in h.coords and "y" in h["site"].values for h in histories)
    # the cluster variable's two panels only for models with a y
    fig, axes = plt.subplots(1, 3, figsize=(15, 4)) if with_y else plt.subplots(1, 1, figsize=(6, 4))
    axes = np.atleast_1d(axes)
    held_out = "validation"
    for index, run in enumerate(runs):
        h = run["history"]
        epoch = h["epoch"].values
        color = f"C{index}"  # one colour a run across the panels
        name = "validation_elbo" if "validation_elbo" in h else "test_elbo"
        held_out = name.split("_")[0]
        if name in h:
            values = h[name].values
            seen = np.isfinite(values)  # evaluated epochs only (--eval-every)
            axes[0].plot(epoch[seen], values[seen], marker=".", color=color, label=run["name"])
        if not with_y:
            continue
        if "kl" in h and "site" in h.coords and "y" in h["site"].values:
            axes[1].plot(epoch, h["kl"].sel(site="y").values, marker=".", color=color,
                         label=run["name"])
        for key in ("validation_error", "test_error"):  # the held-out one where there is one
            if key in h:
                values = 1 - h[key].values
                seen = np.isfinite(values)
                axes[2].plot(epoch[seen], values[seen], marker=".", color=color,
                             label=f"{run['name']} (classification, {key.split('_')[0]})")
                break
        if "validation_clustering_accuracy" in h:
            axes[2].plot(epoch, h["validation_clustering_accuracy"].values, marker=".",
                         color=color, label=f"{run['name']} (clustering)")
    axes[0].set(xlabel="epoch", ylabel=f"{held_out} ELBO (nats, beta = 1)",
                title="learning curves")
    if with_y:
        axes[1].set(xlabel="epoch", ylabel="KL(q(y|.) || p(y)) (nats)",
                    title="use of the cluster variable y")
        axes[2].set(xlabel="epoch", ylabel="accuracy", title="q(y | .) against the classes")
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
    parser.add_argument("--beside", nargs="+", type=Path, default=[],
                        help="evaluated runs shown in the table and the paired differences but "
                             "not part of the claimed ordering (e.g. the other setting of a choice)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for report.md, report.json, learning_curves.png")
    args = parser.parse_args(argv)
    runs = [load(r) for r in args.runs]
    beside = [load(r) for r in args.beside]
    rows = [row(r) for r in runs + beside]
    pairs = [paired(a, b) for a, b in itertools.combinations(runs + beside, 2)]
    # the claimed ordering holds when each run beats the next by more than two paired SEs
    ordered = all(paired(a, b)["z"] > 2 for a, b in zip(runs[:-1], runs[1:], strict=True))
    verdict = (f"ordering {' > '.join(r['name'] for r in runs)}: "
               f"{'shown' if ordered else 'not shown'} (each adjacent difference > 2 paired SEs)")
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, pairs) + "\n" + verdict + "\n"
    results.atomic_write(args.out / "report.md", lambda tmp: Path(tmp).write_text(text))
    results.write_json(args.out / "report.json", {"runs": rows, "paired": pairs,
                                                   "ordering_shown": ordered})
    plot_curves(runs + beside, args.out / "learning_curves.png")
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
