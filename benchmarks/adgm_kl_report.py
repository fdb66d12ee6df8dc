"""Table and curves of the ADGM a-term study (``benchmarks/results/adgm_kl/commands.sh``).

What that study called "KL(a)" is the a-term of the bound, E_q[log q(a|x) - log p(a|x,y,z)]: for the
ADGM it is no KL (it equals E[KL(q(a|x,y,z) || p(a|x,y,z))] - I_q(a; y,z | x)) and cannot show a
collapse; newer records keep it as ``a_term`` and measure the use of a with ``mutual_info_y_a``
(``ppl_dgm.infer.auxiliary_diagnostics``). The columns below are labelled "a-term".

    python benchmarks/adgm_kl_report.py runs/adgm_kl     # writes benchmarks/results/adgm_kl/

For every arm (a ``ppl-dgm reproduce`` report folder under the given directory) it reads the run's
``history.nc`` (per epoch: test error with 10 samples of a, per-site KL, CPU seconds), ``summary.json``
and, when present, ``evaluation.json`` (the test error with the registered 100 samples of a), and
copies these small records to ``benchmarks/results/adgm_kl/ARM/``. It writes ``table.md`` (the a-term next
to the error, at the first epoch and at the last) and ``kl_a.png`` (the a-term and the test error against
training CPU minutes, one line per arm).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import xarray as xr  # noqa: E402

HERE = Path(__file__).resolve().parent / "results" / "adgm_kl"
ARMS = ("defaults", "glorot", "glorot_prior", "authors")
RUN = Path("runs") / "adgm-numpyro-seed0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, help="the OUT folder of commands.sh")
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    args = parser.parse_args()
    rows, curves = [], {}
    for arm in args.arms:
        run = args.study / arm / RUN
        if not (run / "history.nc").is_file():
            print(f"{arm}: no history.nc under {run} (skipped)")
            continue
        h = xr.open_dataset(run / "history.nc").load()
        summary = json.loads((run / "summary.json").read_text())
        evaluation = (json.loads((run / "evaluation.json").read_text())
                      if (run / "evaluation.json").is_file() else {})
        kl_a = h["a_term"].values if "a_term" in h else h["kl"].sel(site="a").values
        minutes = h["cpu_seconds"].cumsum().values / 60
        curves[arm] = (minutes, kl_a, h["test_error"].values)
        rows.append((arm, len(h.epoch), float(minutes[-1]), float(kl_a[0]), float(kl_a.max()),
                     float(kl_a[-1]), float(h["kl"].sel(site="z").values[-1]),
                     float(h["test_error"].values[-1]), evaluation.get("test_error"),
                     summary["config"]["hparams"].get("weight_init"),
                     summary["config"].get("weight_prior_std"),
                     summary["config"]["hparams"].get("batch_norm")))
        keep = HERE / arm
        keep.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "history.nc", "summary.json", "evaluation.json"):
            if (run / name).is_file():
                shutil.copy2(run / name, keep / name)
        for name in ("report.md", "report.json"):
            if (args.study / arm / name).is_file():
                shutil.copy2(args.study / arm / name, keep / name)
    lines = ["| arm | weight_init | weight_prior_std | batch_norm | epochs | CPU min | a-term epoch 1 "
             "| a-term max | a-term last | KL(z) last | test error (10 a) | test error (100 a) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (arm, epochs, cpu, kl0, klmax, kl1, klz, err10, err100, init, prior, bn) in rows:
        e100 = f"{100 * err100:.2f}%" if err100 is not None else "-"
        lines.append(f"| {arm} | {init} | {prior} | {bn} | {epochs} | {cpu:.1f} | {kl0:.2f} | "
                     f"{klmax:.2f} | {kl1:.2f} | {klz:.1f} | {100 * err10:.2f}% | {e100} |")
    (HERE / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, (ax_kl, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, (minutes, kl_a, err) in curves.items():
        ax_kl.plot(minutes, kl_a, marker="o", label=arm)
        ax_err.plot(minutes, 100 * err, marker="o", label=arm)
    ax_kl.set(xlabel="training CPU minutes", ylabel="KL(q(a|x) || p(a|x,y,z)) [nats]",
              title="ADGM, MNIST-100: the auxiliary variable's KL")
    ax_err.set(xlabel="training CPU minutes", ylabel="test error [%] (10 samples of a)",
               title="test error")
    ax_err.axhline(0.96, color="k", ls="--", lw=1, label="paper 0.96%")
    for ax in (ax_kl, ax_err):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "kl_a.png", dpi=110)
    print(f"wrote {HERE / 'table.md'} and {HERE / 'kl_a.png'}")


if __name__ == "__main__":
    main()
