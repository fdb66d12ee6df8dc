"""The ADGM branch study of issue 19: each branch beside the main run at equal steps.

    python benchmarks/adgm_branches_report.py MAIN_RUN BRANCH_DIR [BRANCH_DIR ...] --out DIR

``MAIN_RUN`` is the long run the branches started from (its ``history.nc``, evaluated every N
steps); each ``BRANCH_DIR`` is a run started from one of its checkpoints with ``--init-from``
(``benchmarks/results/reproduce/adgm-60k/branches.sh``), named after its folder. Writes to ``--out``:

- ``branches.md``: for every evaluation of every branch, the test error with 100 and with 1 draw of
  a, I(y; a | x), the mean standard deviation of q(a | x), and the main run's last evaluation at or
  before that step; then each branch's steps, training CPU minutes and its change from the main run
  at its last evaluation,
  with the binomial standard error of that difference (the two errors on the same 10,000 test
  images are not independent, so this is an upper bound of the paired one);
- ``branches.png``: the test error (100 draws) and I(y; a | x) against optimiser steps, the main run
  beside the branches (the ADGM authors' published errors at those steps in the title).

The ADGM's a-term is never called a KL here: I(y; a | x) is what tells whether the classifier uses a.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from adgm_steps_report import last_index

from ppl_dgm import reference, results

FIGURES = ("test_error_a100", "test_error_a1", "mutual_info_y_a", "a_std")


def evaluated(run_dir: Path) -> dict[str, np.ndarray]:
    """The steps a run was evaluated at and its figures there (rows with a test error only)."""
    path = run_dir / results.HISTORY
    if not path.is_file():
        raise SystemExit(f"adgm_branches_report: error: {path} not found; give a run directory "
                         "trained with --eval-every")
    history = results.read_history(path)
    missing = [name for name in ("step", *FIGURES) if name not in history]
    if missing:
        raise SystemExit(f"adgm_branches_report: error: {run_dir} records no {', '.join(missing)}; "
                         "give an ADGM or SDGM run")
    keep = np.isfinite(history["test_error_a100"].values)
    out = {name: history[name].values[keep].astype(float) for name in ("step", *FIGURES)}
    out["cpu_minutes"] = np.array([float(np.nansum(history["cpu_seconds"].values)) / 60])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("main_run", type=Path, help="the run the branches started from")
    parser.add_argument("branches", type=Path, nargs="+", help="the branch run directories")
    parser.add_argument("--out", type=Path, required=True, help="folder for branches.md/.png")
    args = parser.parse_args()
    main_run = evaluated(args.main_run)
    branches = {path.name: evaluated(path) for path in args.branches}
    args.out.mkdir(parents=True, exist_ok=True)

    lines = ["| branch | steps | test error, 100 draws | 1 draw | I(y; a \\| x), nats | "
             "std of q(a\\|x) | main run at or before (steps: 100 draws / I) |",
             "|---|---|---|---|---|---|---|"]
    for name, run in branches.items():
        for i, step in enumerate(run["step"]):
            j = last_index(main_run["step"], step)
            beside = "-" if j is None else (
                f"{int(main_run['step'][j])}: {100 * main_run['test_error_a100'][j]:.2f}% / "
                f"{main_run['mutual_info_y_a'][j]:.4f}")
            lines.append(f"| {name} | {int(step)} | {100 * run['test_error_a100'][i]:.2f}% | "
                         f"{100 * run['test_error_a1'][i]:.2f}% | "
                         f"{run['mutual_info_y_a'][i]:.4f} | {run['a_std'][i]:.3f} | {beside} |")
    lines += ["", "Each branch's last evaluation beside the main run's last one at or before it:", "",
              "| branch | steps | training CPU minutes | main run's steps | branch - main run, "
              "points | binomial SE of the difference, points |", "|---|---|---|---|---|---|"]
    for name, run in branches.items():
        step, mine = run["step"][-1], run["test_error_a100"][-1]
        j = last_index(main_run["step"], step)
        if j is None:
            lines.append(f"| {name} | {int(step)} | {run['cpu_minutes'][0]:.1f} | - | - | - |")
            continue
        theirs = main_run["test_error_a100"][j]
        se = math.sqrt((mine * (1 - mine) + theirs * (1 - theirs)) / 10_000)
        lines.append(f"| {name} | {int(step)} | {run['cpu_minutes'][0]:.1f} | "
                     f"{int(main_run['step'][j])} | {100 * (mine - theirs):+.2f} | {100 * se:.2f} |")
    (args.out / "branches.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    from matplotlib.figure import Figure

    authors = reference.adgm_mnist100()
    first = min(run["step"].min() for run in branches.values()) - 3000
    last = max(run["step"].max() for run in branches.values()) + 3000
    fig = Figure(figsize=(11, 4.5))
    err_ax, info_ax = fig.subplots(1, 2)
    shown = (main_run["step"] >= first) & (main_run["step"] <= last)
    err_ax.plot(main_run["step"][shown], 100 * main_run["test_error_a100"][shown], "k-o",
                markersize=3, label="main run")
    info_ax.plot(main_run["step"][shown], main_run["mutual_info_y_a"][shown], "k-o", markersize=3,
                 label="main run")
    logged = np.isfinite(authors.test_error_a100) & (authors.steps >= first) & (authors.steps <= last)
    theirs = ", ".join(f"{100 * e:.1f}% at {s / 1000:g}k" for s, e in
                       zip(authors.steps[logged], authors.test_error_a100[logged], strict=True))
    for name, run in branches.items():
        err_ax.plot(run["step"], 100 * run["test_error_a100"], "-o", markersize=3, label=name)
        info_ax.plot(run["step"], run["mutual_info_y_a"], "-o", markersize=3, label=name)
    level = float(np.mean([run["test_error_a100"][-1] for run in branches.values()]))
    err_ax.set(xlabel="optimiser steps", ylabel="test error, % (100 draws of a)",
               title=f"one figure's binomial SE on 10,000 images: about "
                     f"{100 * math.sqrt(level * (1 - level) / 10_000):.2f} points")
    err_ax.title.set_fontsize("small")
    info_ax.set(xlabel="optimiser steps", ylabel="I(y; a | x), nats (test images)")
    for ax in (err_ax, info_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("ADGM branches from the main run's checkpoint, by optimiser steps"
                 + (f" (the authors' log, 100 draws of a: {theirs})" if theirs else ""),
                 fontsize="small")
    fig.tight_layout()
    fig.savefig(args.out / "branches.png", dpi=120)


if __name__ == "__main__":
    main()
