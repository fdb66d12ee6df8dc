"""Run the tutorials and store their outputs for the docs: ``python docs/run_tutorials.py``.

Each ``tutorials/NN_*.py`` runs in its quick mode (``--full`` for the full one) with
``out=docs/tutorials/outputs/<name>``; what it prints goes to ``output.txt`` there, beside the
figures it writes (other files it leaves are removed). The Sphinx build shows them under each
tutorial's page and never runs a tutorial itself. Run one thread per process, e.g.
``OMP_NUM_THREADS=1 python docs/run_tutorials.py 01_m2 03_lvae``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ROOT / "docs" / "tutorials" / "outputs"


class _Tee(io.TextIOBase):
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def run(script: Path, full: bool) -> Path:
    folder = OUTPUTS / script.stem
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    spec = importlib.util.spec_from_file_location(f"tutorial_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    captured = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
        module.main(quick=not full, out=str(folder))
    seconds = time.perf_counter() - start
    # keep the figures and the text only; paths are shown relative to the output folder
    for path in sorted(folder.iterdir(), reverse=True):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.suffix != ".png":
            path.unlink()
    text = captured.getvalue().replace(str(folder) + "/", "").replace(str(folder), ".")
    (folder / "output.txt").write_text(text)
    command = f"python tutorials/{script.name}" + (" --full" if full else "")
    (folder / "command.txt").write_text(command + "\n")
    print(f"{script.name}: {seconds:.1f} s -> {folder.relative_to(ROOT)}", file=sys.stderr)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*",
                        help="tutorials to run, e.g. 01_m2 (default: all of tutorials/NN_*.py)")
    parser.add_argument("--full", action="store_true", help="the full runs (default: quick)")
    args = parser.parse_args(argv)
    scripts = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
    if args.names:
        known = {s.stem: s for s in scripts}
        unknown = [n for n in args.names if n not in known]
        if unknown:
            parser.error(f"no tutorial {unknown}; choose from {sorted(known)}")
        scripts = [known[n] for n in args.names]
    for script in scripts:
        run(script, args.full)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
