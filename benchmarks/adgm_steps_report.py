"""ADGM by optimiser steps beside the authors' curve, SDGM and M2: one figure and one table.

Reads a long ADGM run (``ppl-dgm reproduce adgm-mnist100``'s run directory, evaluated every N steps)
and the stored records of earlier SDGM and M2 runs (``benchmarks/results/reproduce/*/run``: their
test error per epoch, at ``steps_per_epoch`` steps each), and writes to ``--out``:

- ``steps.png``: test error against optimiser steps for every run, with the ADGM authors' published
  curve (1 and 100 samples of a; ``ppl_dgm.reference``);
- ``steps.md``: the test error of each run at equal steps (the steps every ADGM evaluation was made
  at, and the milestones), the diagnostics of a, and the run's wall and CPU time.

``--beside LABEL=RUN_DIR`` adds the curve of another run evaluated by steps (the SDGM run of the
same recipe: ``commands.sh sdgm``), its 100-draw error where recorded.

Every figure is labelled with how its error was measured (samples of a; the earlier runs used 10
draws per epoch and held out 10,000 validation images, the new one trains on all 60,000).

    python benchmarks/adgm_steps_report.py RUN_DIR --out benchmarks/results/reproduce/adgm-60k
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ppl_dgm import reference, results

STORED = Path(__file__).resolve().parent / "results" / "reproduce"
OTHERS = {"M2 (earlier run, 10k held out)": STORED / "m2-mnist100" / "run",
          "SDGM (earlier run, 10k held out, 10 draws of a)": STORED / "sdgm-mnist100" / "run",
          "ADGM (earlier run, 10k held out, 10 draws of a)": STORED / "adgm-mnist100" / "run"}


def by_steps(run_dir: Path, name: str = "test_error") -> tuple[np.ndarray, np.ndarray]:
    """(steps, figure) of a run's evaluated records; steps from ``step`` where recorded, else
    epoch x the summary's steps per epoch."""
    history = results.read_history(run_dir / results.HISTORY)
    if name not in history:
        return np.array([]), np.array([])
    if "step" in history:
        steps = history["step"].values
    else:
        per_epoch = results.read_json(run_dir / results.SUMMARY)["steps_per_epoch"]
        steps = history["epoch"].values * per_epoch
    values = history[name].values
    keep = np.isfinite(values)
    return steps[keep].astype(float), values[keep].astype(float)


def last_index(steps: np.ndarray, step: float) -> int | None:
    """The index of the last evaluation at or before ``step`` (None before the first)."""
    done = np.flatnonzero(steps <= step)
    return int(done[-1]) if len(done) else None


def at(steps: np.ndarray, values: np.ndarray, step: float) -> float | None:
    """The last value at or before ``step`` (None before the first)."""
    i = last_index(steps, step)
    return None if i is None else float(values[i])


def diagnostics(title: str, run_dir: Path) -> list[str]:
    """A run's diagnostics of a at every evaluation (held-out images = the test images) and its
    training time, as Markdown lines (the time alone for a run without a)."""
    lines = [""]
    info_steps, info = by_steps(run_dir, "mutual_info_y_a")
    if len(info_steps):
        _, std = by_steps(run_dir, "a_std")
        _, err1 = by_steps(run_dir, "test_error_a1")
        _, err100 = by_steps(run_dir, "test_error_a100")
        lines += [f"{title}: diagnostics of a (held-out images = the test images; no validation "
                  "split):", "", "| steps | I(y; a \\| x), nats | mean std of q(a\\|x) | "
                  "test error, 1 draw | test error, 100 draws |", "|---|---|---|---|---|"]
        for i, step in enumerate(info_steps):
            lines.append(f"| {int(step)} | {info[i]:.4f} | {std[i]:.4f} | {100 * err1[i]:.2f}% | "
                         f"{100 * err100[i]:.2f}% |")
        lines.append("")
    history = results.read_history(run_dir / results.HISTORY)
    wall, cpu = float(history["seconds"].sum()), float(history["cpu_seconds"].sum())
    evaluation = float(np.nansum(history["eval_seconds"].values))
    lines.append(f"{title}: {len(history.epoch)} epochs, {int(history['step'].values[-1])} steps, "
                 f"{wall / 60:.1f} wall minutes, {cpu / 60:.1f} CPU minutes of training "
                 f"(evaluation apart: {evaluation / 60:.1f} wall minutes).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the long ADGM run directory")
    parser.add_argument("--out", type=Path, required=True, help="folder for steps.png and steps.md")
    parser.add_argument("--beside", action="append", default=[], metavar="LABEL=RUN_DIR",
                        help="another run's curve by steps (its 100-draw error where recorded), "
                             "e.g. the SDGM run of the same recipe; repeatable")
    args = parser.parse_args()
    beside = {}
    for item in args.beside:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            parser.error(f"--beside {item!r}: give LABEL=RUN_DIR")
        beside[label] = Path(path)
    args.out.mkdir(parents=True, exist_ok=True)
    authors = reference.adgm_mnist100()
    main_steps, main_err = by_steps(args.run_dir, "test_error_a100")
    curves = {"ADGM, all 60,000 images (100 draws of a)": (main_steps, main_err)}
    for label, run_dir in beside.items():
        if not (run_dir / results.HISTORY).is_file():
            parser.error(f"--beside {label}: {run_dir / results.HISTORY} not found")
        steps, err = by_steps(run_dir, "test_error_a100")
        curves[label] = (steps, err) if len(steps) else by_steps(run_dir)
    for label, run_dir in OTHERS.items():
        if (run_dir / results.HISTORY).is_file():
            curves[label] = by_steps(run_dir)
    limit = 1.3 * max(main_steps.max(initial=0), max(c[0].max(initial=0) for c in curves.values()))
    logged = np.isfinite(authors.test_error_a100) & (authors.steps <= limit)
    one = authors.steps <= limit

    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for label, (x, y) in curves.items():
        ax.plot(x, 100 * y, marker="." if len(x) < 60 else None, label=label)
    ax.plot(authors.steps[one], 100 * authors.test_error_a1[one], ":", linewidth=1,
            label="ADGM authors' log, 1 draw of a")
    ax.plot(authors.steps[logged], 100 * authors.test_error_a100[logged], "o:", markersize=3,
            label="ADGM authors' log, 100 draws of a")
    ax.set_xlabel("optimiser steps")
    ax.set_ylabel("test error, %")
    ax.set_ylim(0, 25)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("MNIST, 100 labels: test error by optimiser steps", fontsize="small")
    fig.tight_layout()
    fig.savefig(args.out / "steps.png", dpi=120)

    marks = sorted({*main_steps[main_steps % 6000 == 0].tolist(),
                    *[m for m in reference.MILESTONES if m <= main_steps.max(initial=0)]})
    lines = ["| steps | " + " | ".join(curves) + " | authors (100 draws) | authors (1 draw) |",
             "|---" * (len(curves) + 3) + "|"]
    for step in marks:
        cells = []
        for x, y in curves.values():
            value = at(x, y, step) if len(x) and x.max() >= step else None
            cells.append("-" if value is None else f"{100 * value:.2f}%")
        a100 = authors.at(int(step))
        a1 = at(authors.steps.astype(float), authors.test_error_a1, step)
        lines.append(f"| {int(step)} | " + " | ".join(cells)
                     + f" | {'-' if a100 is None else f'{100 * a100:.2f}%'} | {100 * a1:.2f}% |")
    lines += diagnostics("The long ADGM run", args.run_dir)
    for label, run_dir in beside.items():
        lines += diagnostics(label, run_dir)
    (args.out / "steps.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
