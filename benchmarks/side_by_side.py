"""One training job alone against the same job run as several copies at once: what sharing the
cores costs each job (the "one job per core" rule measured).

    python benchmarks/side_by_side.py                          # M2 (NumPyro), MNIST, 2 copies
    python benchmarks/side_by_side.py --backend pyro --copies 2 --steps 100

Each job is ``ppl-dgm train MODEL --threads 1`` for two epochs of ``--steps`` steps in its own
process and run directory; the second epoch's wall and CPU seconds per step (the first includes
compilation) are read from each run's ``history.nc``. First one job alone, then ``--copies`` jobs
started together; printed: the median per step of each setting and the ratio of the copies' to the
lone job's, and the throughput of all copies together relative to one job alone. MNIST is read
from ``--data-dir`` (default ``$PPL_DGM_DATA``, else ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import epoch_timing


def jobs(args: argparse.Namespace, folder: Path, copies: int) -> list[dict[str, float]]:
    """``copies`` training jobs at once; per job the second epoch's seconds per step."""
    command = [sys.executable, "-m", "ppl_dgm.cli", "train", args.model, "--backend", args.backend,
               "--dataset", args.dataset, "--data-dir", args.data_dir, "--epochs", "2",
               "--steps-per-epoch", str(args.steps), "--threads", "1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [folder / f"copy{i}" for i in range(copies)]
    procs = [subprocess.Popen([*command, "--seed", str(i), "--out", str(run)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i, run in enumerate(runs)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a job failed: {err.strip().splitlines()[-1] if err.strip() else ''}")
    from ppl_dgm import results

    out = []
    for run in runs:
        history = results.read_history(run / results.HISTORY)
        out.append({"wall_ms": 1000 * float(history["seconds"].values[-1]) / args.steps,
                    "cpu_ms": 1000 * float(history["cpu_seconds"].values[-1]) / args.steps})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="m2", help="a registered model")
    parser.add_argument("--backend", default="numpyro", choices=["pyro", "numpyro"])
    parser.add_argument("--dataset", default="mnist", help="mnist or digits")
    parser.add_argument("--data-dir", default=os.environ.get("PPL_DGM_DATA", "../shared/data"))
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch (two epochs)")
    parser.add_argument("--copies", type=int, default=2, help="jobs started together")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.steps < 1 or args.copies < 2:
        parser.error("--steps must be at least 1 and --copies at least 2")
    load = epoch_timing.uptime()
    with tempfile.TemporaryDirectory() as tmp:
        alone = jobs(args, Path(tmp) / "alone", 1)[0]
        together = jobs(args, Path(tmp) / "together", args.copies)
    wall = statistics.median(j["wall_ms"] for j in together)
    cpu = statistics.median(j["cpu_ms"] for j in together)
    rows = {"alone": alone, "together": {"wall_ms": wall, "cpu_ms": cpu, "jobs": together},
            "slowdown_per_job": wall / alone["wall_ms"],
            "throughput_vs_alone": args.copies * alone["wall_ms"] / wall}
    print(f"{args.model} ({args.backend}) on {args.dataset}, {args.steps} steps, one thread per "
          f"job; load before: {load}")
    print(f"  alone:        {alone['wall_ms']:7.1f} ms/step wall, {alone['cpu_ms']:7.1f} ms CPU")
    print(f"  {args.copies} together:   {wall:7.1f} ms/step wall, {cpu:7.1f} ms CPU (median job): "
          f"each {rows['slowdown_per_job']:.2f}x slower, all together "
          f"{rows['throughput_vs_alone']:.2f}x the steps per second of one job alone")
    after = epoch_timing.uptime()
    print("load after:", after)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "load_before": load, "load_after": after, **rows},
                                        indent=1))


if __name__ == "__main__":
    main()
