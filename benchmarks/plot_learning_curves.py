"""Learning curves of semi-supervised runs: test error against training progress, one PNG.

    python benchmarks/plot_learning_curves.py \
        --run adgm=benchmarks/results/adgm_sdgm/adgm --run sdgm=benchmarks/results/adgm_sdgm/sdgm \
        --run m2=benchmarks/results/m2_mnist_study/recipe \
        --run m2-paper-networks=benchmarks/results/m2_mnist_study/paper \
        --output benchmarks/results/adgm_sdgm/learning_curves.png

Each run's ``history.nc`` gives ``test_error`` per epoch. Runs may use different
``--steps-per-epoch``, so the x axis is the number of passes over the unlabelled training set
(epoch x steps per epoch x batch size / N_unlabelled; equal to the epoch for full epochs) -- the
"equal epochs" comparison. A second panel shows KL(q(a|x) || p(a|.)) per epoch (history ``kl``,
site ``a``) for the runs that have an auxiliary variable: a value near 0 means ``a`` collapsed.
Missing runs are skipped with a message.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ppl_dgm import results

DEFAULT_RUNS = ("adgm=benchmarks/results/adgm_sdgm/adgm",
                "sdgm=benchmarks/results/adgm_sdgm/sdgm",
                "m2=benchmarks/results/m2_mnist_study/recipe",
                "m2-paper-networks=benchmarks/results/m2_mnist_study/paper")


def passes_per_epoch(run_dir: Path, config: dict) -> float:
    """Fraction of the unlabelled set seen in one epoch of this run."""
    summary_path = run_dir / results.SUMMARY
    if summary_path.is_file():
        summary = results.read_json(summary_path)
        steps, n_u = summary["steps_per_epoch"], summary["n_unlabelled"]
    else:  # run still going: rebuild the split sizes from its configuration
        from ppl_dgm.config import TrainConfig
        from ppl_dgm.training.loop import prepare_data

        _, split, _ = prepare_data(TrainConfig.from_dict(config))
        n_u = len(split.unlabelled)
        full = max(n_u // config["batch_size"], 1)
        steps = min(full, config.get("steps_per_epoch") or full)
    return steps * config["batch_size"] / n_u


def load_curve(run_dir: Path) -> dict:
    history = results.read_history(run_dir / results.HISTORY)
    config = json.loads(history.attrs["config"]) if isinstance(history.attrs["config"], str) \
        else history.attrs["config"]
    epochs = np.asarray(history["epoch"])
    curve = {"epoch": epochs, "passes": epochs * passes_per_epoch(run_dir, config),
             "test_error": np.asarray(history["test_error"]), "config": config}
    if "kl" in history and "a" in history["site"].values:
        # the a-term (no KL for the ADGM: ppl_dgm.infer.auxiliary_diagnostics); older records kept
        # it as the "a" site of kl
        curve["kl_a"] = np.asarray(history["a_term"] if "a_term" in history
                                   else history["kl"].sel(site="a"))
    return curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", metavar="LABEL=RUN_DIR",
                        help=f"a run to plot (default: {', '.join(DEFAULT_RUNS)})")
    parser.add_argument("--output", default="benchmarks/results/adgm_sdgm/learning_curves.png")
    parser.add_argument("--title", default="MNIST, 100 labels: test error during training")
    args = parser.parse_args(argv)

    from matplotlib.figure import Figure

    curves = {}
    for item in args.run or DEFAULT_RUNS:
        label, _, path = item.partition("=")
        run_dir = Path(path)
        if not (run_dir / results.HISTORY).is_file():
            print(f"skipping {label}: no {results.HISTORY} in {run_dir}")
            continue
        curves[label] = load_curve(run_dir)
    if not curves:
        raise SystemExit("no run to plot")

    with_kl = {k: c for k, c in curves.items() if "kl_a" in c}
    fig = Figure(figsize=(11 if with_kl else 6, 4.2))
    axes = fig.subplots(1, 2 if with_kl else 1, squeeze=False)[0]
    for label, c in curves.items():
        final = c["test_error"][-1]
        axes[0].plot(c["passes"], 100 * c["test_error"], marker=".",
                     label=f"{label} ({100 * final:.2f}% after {c['passes'][-1]:.1f} passes)")
    axes[0].set_xlabel("passes over the unlabelled set (= full epochs)")
    axes[0].set_ylabel("test error [%]")
    axes[0].set_title(args.title, fontsize="medium")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    if with_kl:
        for label, c in with_kl.items():
            axes[1].plot(c["passes"], c["kl_a"], marker=".", label=label)
        axes[1].set_xlabel("passes over the unlabelled set (= full epochs)")
        axes[1].set_ylabel("a-term E_q[log q(a|x) - log p(a|.)] [nats]")
        axes[1].set_title("the a-term of the bound (not a KL; see I(y; a | x))", fontsize="medium")
        axes[1].grid(alpha=0.3)
        axes[1].legend(fontsize="small")
    fig.tight_layout()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    results.atomic_write(output, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    print(f"wrote {output}")
    for label, c in curves.items():
        print(f"{label}: " + ", ".join(f"{p:.2f}:{100 * e:.2f}%"
                                       for p, e in zip(c["passes"], c["test_error"], strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
