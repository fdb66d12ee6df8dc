"""Step time of every registered model against the matmul floor of its step, per thread count.

    python benchmarks/throughput.py                 # every model, 1 thread and all cores, CPU
    python benchmarks/throughput.py --quick         # small batches, 1 thread: checks it runs
    python benchmarks/throughput.py --device cuda   # the same on a GPU
    python benchmarks/throughput.py --models m2 adgm --threads 1 2

For every thread count, one child process (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` and XLA's flags
set before torch and JAX start, as ``ppl_dgm.threads`` does) times, for every model with the steps
interleaved (one of each in turn, medians reported):

- ``pyro``: one optimiser step of the Pyro trainer (``Trainer.train_step``: the batch gathered on
  the device, dynamic binarisation, the objective, backward, clipping, the optimiser), the
  registered recipe and networks, on synthetic data of the registered shapes (MNIST-sized images,
  or 100 x 100 canvases with 3 digits for the RNN-SPN and its baselines);
- ``numpyro``: the NumPyro trainer's compiled step (``NumPyroTrainer.train_step``, waiting for its
  result); ``numpyro_compile_seconds`` is the ahead-of-time compilation, reported apart;
- ``torch``: a plain-PyTorch loss of the same networks where one exists (M2: the bounds written
  with broadcasting, ``throughput_m2.sum_reference``; ADGM/SDGM: ``throughput_auxiliary.reference_loss``;
  RNN-SPN, FFN-SPN, CNN: the cross-entropy of the reader network), same optimiser and clipping;
- ``floor``: the matmul floor of that step: every GEMM (``mm``, ``addmm``, ``bmm``, ``baddbmm``)
  and convolution (forward and backward) that one Pyro step runs, recorded with a
  ``TorchDispatchMode`` from the registered networks' shapes, replayed alone on random tensors of
  the same shapes and strides; its FLOPs give the achieved GFLOP/s.

The figures are the ratios of each step to the floor, the speed-up of all cores over one thread,
and epochs per hour in the paper's setting (50,000 training points after the 10,000 held out, the
registered batch size; evaluation excluded). The JSON and a markdown table go to
``benchmarks/results/throughput/`` with the machine, its load (``uptime``) and the versions.
``--device cuda`` runs the same steps on the GPU (synchronising before each clock reading);
``--quick`` uses batches of 20, 2 timed steps, one thread and XLA's fast compilation, compiles the
NumPyro step of M2 only (else of the first model), and measures nothing worth keeping (its files
are named ``quick-*``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "throughput"
N_TRAIN_PAPER = 50_000  # MNIST's (and the sequences') 60,000 less the 10,000 held out
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


# ------------------------------------------------------------------------------------ parent
def machine() -> dict[str, Any]:
    """CPU model, cores, load and ``uptime`` (the load is part of every figure)."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = ""
    return {"cpu": model, "cores": os.cpu_count(), "load_average": list(os.getloadavg()),
            "uptime": uptime, "platform": platform.platform()}


def child_env(threads: int, quick: bool) -> dict[str, str]:
    sys.path.insert(0, str(HERE.parent))
    from ppl_dgm.threads import _xla_flags

    env = dict(os.environ)
    base = env.get("XLA_FLAGS", "")
    if quick:
        base = f"{base} {FAST_COMPILE}".strip()
    env["XLA_FLAGS"] = _xla_flags(base, threads)
    if threads > 0:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
        env.pop("MKL_NUM_THREADS", None)
    return env


def run_children(args: argparse.Namespace) -> dict[str, Any]:
    per_threads = {}
    for threads in args.threads:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "child.json"
            command = [sys.executable, str(Path(__file__).resolve()), "--child", str(out),
                       "--device", args.device, "--steps", str(args.steps),
                       "--threads", str(threads), "--models", *args.models]
            if args.quick:
                command.append("--quick")
            if args.no_numpyro:
                command.append("--no-numpyro")
            started = time.perf_counter()
            done = subprocess.run(command, env=child_env(threads, args.quick), cwd=str(HERE))
            if done.returncode != 0 or not out.is_file():
                raise SystemExit(f"throughput: the child for {threads} thread(s) failed "
                                 f"(exit {done.returncode})")
            record = json.loads(out.read_text())
            record["wall_seconds"] = time.perf_counter() - started
            per_threads[str(threads)] = record
    return per_threads


def summarise(per_threads: dict[str, Any]) -> dict[str, Any]:
    """Speed-up of the largest thread count over one thread, per model and step."""
    counts = sorted(per_threads, key=int)
    if "1" not in per_threads or len(counts) < 2:
        return {}
    most = max(counts, key=lambda c: int(c) or os.cpu_count() or 1)
    out: dict[str, Any] = {}
    for model, one in per_threads["1"]["models"].items():
        many = per_threads[most]["models"].get(model, {})
        out[model] = {k: one["step_seconds"][k] / many["step_seconds"][k]
                      for k in one.get("step_seconds", {})
                      if many.get("step_seconds", {}).get(k)}
    return {"threads": most, "speedup_over_one_thread": out}


def per_hour(key: str, epochs_per_hour: dict[str, float]) -> str:
    return f"{epochs_per_hour[key]:.1f}" if key in epochs_per_hour else "-"


def markdown(record: dict[str, Any]) -> str:
    m = record["machine"]
    lines = ["# Step throughput of the registered models", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; device {record['device']}; "
             f"load before: {record['load_before']}; after: {m['uptime']}.",
             f"Versions: {record['versions']}.",
             f"Command: `{record['command']}`" + (" (quick: not a measurement)" if record["quick"]
                                                  else ""), ""]
    for threads, rec in record["per_threads"].items():
        lines += [f"## {threads} thread(s)" if threads != "0" else "## every core", "",
                  "| model | pyro ms | numpyro ms (compile s) | torch ms | floor ms (GFLOP, GFLOP/s) "
                  "| pyro/floor | numpyro/floor | torch/floor | epochs/hour pyro | numpyro |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for model, r in rec["models"].items():
            if "error" in r:
                lines.append(f"| {model} | error: {r['error']} |||||||||")
                continue
            s, ratio, eph = r["step_seconds"], r["ratio_to_floor"], r["epochs_per_hour"]

            def ms(key: str, s: dict = s) -> str:
                return f"{1e3 * s[key]:.1f}" if s.get(key) else "-"

            def x(key: str, ratio: dict = ratio) -> str:
                return f"{ratio[key]:.2f}" if ratio.get(key) else "-"

            compile_s = r.get("numpyro_compile_seconds")
            floor = r["floor"]
            lines.append(
                f"| {model} | {ms('pyro')} | {ms('numpyro')}"
                + (f" ({compile_s:.1f})" if compile_s else "") + f" | {ms('torch')} | "
                f"{ms('floor')} ({floor['gflop']:.2f}, {floor['gflop_per_second']:.0f}) | "
                f"{x('pyro')} | {x('numpyro')} | {x('torch')} | "
                f"{per_hour('pyro', eph)} | {per_hour('numpyro', eph)} |")
        lines.append("")
    speed = record.get("summary", {})
    if speed:
        lines += [f"## Speed-up of {speed['threads']} threads over one", "",
                  "| model | " + " | ".join(["pyro", "numpyro", "torch", "floor"]) + " |",
                  "|---|---|---|---|---|"]
        for model, ups in speed["speedup_over_one_thread"].items():
            lines.append(f"| {model} | " + " | ".join(
                f"{ups[k]:.2f}" if k in ups else "-" for k in ("pyro", "numpyro", "torch", "floor"))
                + " |")
    return "\n".join(lines) + "\n"


def parent(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    sys.path.insert(0, str(HERE.parent))
    from ppl_dgm import registry
    from ppl_dgm.results import environment

    if not args.models:
        args.models = sorted({s.name for s in registry.all_specs() if s.backend == "pyro"})
    if not args.threads:
        args.threads = [1] if args.quick else sorted({1, os.cpu_count() or 1})
    load_before = machine()["uptime"]
    per_threads = run_children(args)
    record = {"command": "python benchmarks/throughput.py " + " ".join(argv),
              "quick": args.quick, "device": args.device, "load_before": load_before,
              "machine": machine(), "versions": environment(args.device)["versions"],
              "per_threads": per_threads, "summary": summarise(per_threads)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"{'quick-' if args.quick else ''}{args.device.replace(':', '')}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=1))
    (RESULTS / f"{stem}.md").write_text(markdown(record))
    print(markdown(record))
    print(f"wrote {RESULTS / stem}.json and .md")
    return record


# ------------------------------------------------------------------------------------ child
GEMMS = ("mm", "addmm", "bmm", "baddbmm", "convolution", "convolution_backward")


def synthetic_data(folder: Path, sequence: bool, n: int) -> Path:
    """An ``.npz`` of the MNIST key layout with the registered shapes (random images, every class)."""
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (100, 100) if sequence else (28, 28)
    arrays = {}
    for split, count in (("train", n), ("test", 20)):
        arrays[f"x_{split}"] = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
        y = np.arange(count * (3 if sequence else 1)) % 10
        arrays[f"y_{split}"] = y.reshape(count, 3) if sequence else y
    path = folder / f"{'sequences' if sequence else 'images'}.npz"
    np.savez(path, **arrays)
    return path


class GemmRecorder:
    """Records the GEMMs and convolutions that run under it (forward and backward)."""

    def __init__(self) -> None:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        recorder = self
        self.calls: list[tuple[Any, Any, Any]] = []

        def spec(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return ("tensor", tuple(value.shape), tuple(value.stride()), value.dtype)
            return value

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func.overloadpacket.__name__ in GEMMS:
                    recorder.calls.append((func, torch.utils._pytree.tree_map(spec, args),
                                           torch.utils._pytree.tree_map(spec, kwargs)))
                return func(*args, **kwargs)

        self.mode = Mode()

    def replay_fn(self, device: Any) -> tuple[Any, float]:
        """A function running every recorded call once on random tensors, and the calls' GFLOP."""
        import torch

        def make(value: Any) -> Any:
            if isinstance(value, tuple) and len(value) == 4 and value[0] == "tensor":
                _, shape, stride, dtype = value
                size = 1 + sum((s - 1) * st for s, st in zip(shape, stride, strict=True) if s > 0)
                buffer = torch.randn(max(size, 1), device=device).to(dtype)
                return buffer.as_strided(shape, stride)
            return value

        calls = [(func, torch.utils._pytree.tree_map(make, a, is_leaf=_is_spec),
                  torch.utils._pytree.tree_map(make, k, is_leaf=_is_spec))
                 for func, a, k in self.calls]
        gflop = sum(_flops(func.overloadpacket.__name__, a) for func, a, _ in self.calls) / 1e9

        def replay() -> None:
            for func, a, k in calls:
                func(*a, **k)

        return replay, gflop


def _is_spec(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 4 and value[0] == "tensor"


def _flops(name: str, args: Any) -> float:
    """Multiply-adds x 2 of one recorded call, from its argument shapes."""
    import math

    def shape(i: int) -> tuple[int, ...]:
        return args[i][1]

    if name == "mm":
        (m, k), (_, n) = shape(0), shape(1)
        return 2.0 * m * k * n
    if name == "addmm":
        (m, k), (_, n) = shape(1), shape(2)
        return 2.0 * m * k * n
    if name == "bmm":
        (b, m, k), (_, _, n) = shape(0), shape(1)
        return 2.0 * b * m * k * n
    if name == "baddbmm":
        (b, m, k), (_, _, n) = shape(1), shape(2)
        return 2.0 * b * m * k * n
    if name == "convolution":  # input, weight, bias, stride, padding, dilation, transposed, ...
        weight = shape(1)
        stride, padding, dilation = args[3], args[4], args[5]
        n, spatial = shape(0)[0], shape(0)[2:]
        out = [(s + 2 * p - d * (k - 1) - 1) // st + 1 for s, p, d, k, st in
               zip(spatial, padding, dilation, weight[2:], stride, strict=True)]
        return 2.0 * n * weight[0] * math.prod(out) * weight[1] * math.prod(weight[2:])
    if name == "convolution_backward":  # grad_output, input, weight, ..., output_mask
        grad_out, weight, mask = shape(0), shape(2), args[-1]
        forward = 2.0 * grad_out[0] * weight[0] * math.prod(grad_out[2:]) * weight[1] * math.prod(
            weight[2:])
        return forward * (int(mask[0]) + int(mask[1]))
    return 0.0


def torch_reference(model: str, trainer: Any) -> Any | None:
    """A step of a plain-PyTorch loss of the trainer's own networks, or ``None``."""
    import torch
    import torch.nn.functional as F

    from ppl_dgm.training.loop import clip_gradients, make_optimizer

    cfg, pair = trainer.config, trainer.pair
    params = list(pair.parameters())
    opt, _ = make_optimizer(cfg, params)
    xs = trainer.x_train
    n = cfg.batch_size
    if model == "m2":
        from throughput_m2 import sum_reference

        fn = sum_reference(pair, pair.q.alpha)
    elif model in ("adgm", "sdgm"):
        from throughput_auxiliary import reference_loss

        def fn(x_l, y_l, x_u):
            return reference_loss(model, pair, x_l, y_l, x_u, cfg.num_particles)
    elif model in ("rnn-spn", "ffn-spn", "cnn-seq"):
        net = pair.p.net

        def fn(x, y, _):
            logits = net(x)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    else:
        return None

    def step() -> None:
        idx = torch.randint(len(xs), (n,), device=xs.device)
        idx_l = torch.randint(len(xs), (cfg.labelled_batch_size,), device=xs.device)
        if trainer.task == "supervised":
            loss = fn(xs[idx], trainer.y_train[idx], None)
        else:
            loss = fn(torch.bernoulli(xs[idx_l]), trainer.y_train[idx_l], torch.bernoulli(xs[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(params, cfg)
        opt.step()
        loss.item()  # as the trainer, one synchronisation per step

    return step


def cycling(make_batches: Any) -> Any:
    """Endless batches from a trainer's ``_batches`` (a new epoch's order when one runs out)."""
    while True:
        yield from make_batches()


def bench_model(model: str, device: str, quick: bool, steps: int, tmp: Path,
                numpyro: bool = True) -> dict[str, Any]:
    import torch

    from ppl_dgm import registry
    from ppl_dgm.config import resolve
    from ppl_dgm.training.loop import Trainer

    spec = registry.get(model, "pyro")
    sequence = spec.train.get("dataset") == "mnist-sequence"
    registered_batch = spec.train.get("batch_size", 100)
    batch = 20 if quick else registered_batch
    n = max(4 * batch, 400)
    overrides: dict[str, Any] = {"dataset": str(synthetic_data(tmp, sequence, n + 100)),
                                 "device": device, "validation_size": 100, "seed": 0,
                                 "batch_size": batch, "labelled_batch_size": batch}
    if spec.task == "semi-supervised":
        overrides["labels"] = 20 if quick else 100
    record: dict[str, Any] = {"batch_size": batch, "registered_batch_size": registered_batch}
    config = resolve(spec, overrides)
    trainer = Trainer(config, tmp / f"{model}-pyro", progress=False)
    dev = trainer.device

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    pyro_batches = cycling(trainer._batches)

    def pyro_step() -> None:
        trainer.train_step(*next(pyro_batches))
        sync()

    steps_fns: dict[str, Any] = {"pyro": pyro_step}
    reference = torch_reference(model, trainer)
    if reference is not None:
        steps_fns["torch"] = lambda: (reference(), sync())
    recorder = GemmRecorder()
    with recorder.mode:
        trainer.train_step(*next(pyro_batches))
    replay, gflop = recorder.replay_fn(dev)
    steps_fns["floor"] = lambda: (replay(), sync())
    record["floor_calls"] = len(recorder.calls)
    try:
        registry.get(model, "numpyro")
        has_numpyro = numpyro
    except KeyError:
        has_numpyro = False
    if has_numpyro:
        from ppl_dgm.training.numpyro_loop import NumPyroTrainer

        started = time.perf_counter()
        np_trainer = NumPyroTrainer(resolve(registry.get(model, "numpyro"), overrides),
                                    tmp / f"{model}-numpyro", progress=False)
        record["numpyro_init_seconds"] = time.perf_counter() - started
        np_trainer.compile()
        record["numpyro_compile_seconds"] = np_trainer.compile_seconds
        np_batches = cycling(np_trainer._batches)

        def numpyro_step() -> None:
            loss, _ = np_trainer.train_step(*next(np_batches))
            loss.block_until_ready()

        steps_fns["numpyro"] = numpyro_step
    warmup = 1 if quick else 3
    times: dict[str, list[float]] = {k: [] for k in steps_fns}
    for i in range(warmup + steps):
        for name, fn in steps_fns.items():
            sync()
            started = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - started
            if i >= warmup:
                times[name].append(elapsed)
    seconds = {k: statistics.median(v) for k, v in times.items()}
    floor = seconds["floor"]
    steps_per_epoch = N_TRAIN_PAPER // registered_batch
    record.update({
        "step_seconds": seconds,
        "floor": {"seconds": floor, "gflop": gflop, "gflop_per_second": gflop / floor},
        "ratio_to_floor": {k: v / floor for k, v in seconds.items() if k != "floor"},
        "paper_steps_per_epoch": steps_per_epoch,
        "epochs_per_hour": {k: 3600 / (v * steps_per_epoch) for k, v in seconds.items()
                            if k != "floor"},
    })
    return record


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    import pyro
    import torch

    from ppl_dgm.threads import start_xla, threads_in_use

    if args.threads[0] > 0:
        torch.set_num_threads(args.threads[0])
    if not args.no_numpyro and args.device == "cpu":
        start_xla(args.threads[0])  # XLA's pool sized for the thread count, as a NumPyro run
    pyro.enable_validation(False)
    torch.manual_seed(0)
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            started = time.perf_counter()
            try:
                # --quick compiles one NumPyro step only, M2's (compilation dominates)
                first = "m2" if "m2" in args.models else args.models[0]
                numpyro = not args.no_numpyro and (not args.quick or model == first)
                models[model] = bench_model(model, args.device, args.quick, args.steps, Path(tmp),
                                            numpyro)
            except Exception as err:  # one model's failure is reported, the others still run
                models[model] = {"error": f"{type(err).__name__}: {err}"[:300]}
            models[model]["wall_seconds"] = time.perf_counter() - started
            print(f"throughput: {model} ({args.threads[0]} thread(s)) "
                  f"{models[model].get('step_seconds', models[model].get('error'))}", flush=True)
    Path(args.child).write_text(json.dumps({"threads": threads_in_use(), "models": models}))


def main(argv: list[str] | None = None) -> Any:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="thread counts, one child process each (0: every core; default 1 "
                             "and the number of cores; --quick: 1)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps of each kind (default 10; --quick: 2)")
    parser.add_argument("--quick", action="store_true",
                        help="batches of 20, 2 steps, one thread, fast XLA compilation, NumPyro "
                             "for M2 only")
    parser.add_argument("--no-numpyro", action="store_true", help="time the Pyro side only")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 2 if args.quick else 10
    if args.child:
        return child(args)
    return parent(args, argv)


if __name__ == "__main__":
    main()
