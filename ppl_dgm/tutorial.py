"""Small pieces every tutorial in ``tutorials/`` shares (backend-neutral: imports neither torch nor JAX).

* :func:`output_dir` -- where a tutorial writes: ``out`` if given, else the user's cache folder
  ``$PPL_DGM_CACHE/tutorials/<name>`` (default ``~/.cache/ppl_dgm/tutorials/<name>``), never a data
  folder;
* :func:`cleanup` -- remove long-lived intermediates (run directories, checkpoints) unless ``keep``;
* :func:`run_main` -- the command line every tutorial ends with: ``--full``, ``--mnist``,
  ``--data-dir``, ``--out DIR``, ``--keep`` (it tolerates the extra arguments Jupyter passes, so the
  last cell also runs inside a notebook).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """The library's cache folder (:func:`ppl_dgm.data.mnist.cache_dir`): ``$PPL_DGM_CACHE``, else
    ``$XDG_CACHE_HOME/ppl_dgm``, else ``~/.cache/ppl_dgm``."""
    from ppl_dgm.data.mnist import cache_dir

    return cache_dir()


def output_dir(name: str, out: str | os.PathLike | None = None) -> Path:
    """The folder tutorial ``name`` writes to (created): ``out``, or ``cache_root()/tutorials/name``."""
    path = Path(out).expanduser() if out is not None else cache_root() / "tutorials" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def cleanup(paths: Iterable[str | os.PathLike], keep: bool) -> list[Path]:
    """Remove ``paths`` (files or folders) unless ``keep``; returns what was removed."""
    removed = []
    if keep:
        return removed
    for path in map(Path, paths):
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
        elif path.exists():
            path.unlink()
            removed.append(path)
    return removed


def run_main(main: Callable[..., dict[str, Any]], doc: str | None,
             argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the tutorials' common options and call ``main``.

    ``--data-dir`` is passed on only to tutorials whose ``main`` takes ``data_dir`` (where MNIST is
    read; nothing is written there).
    """
    import inspect

    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true",
                        help="the full run instead of the quick one (default: quick, on the bundled "
                             "8x8 digits, well under a minute on one core)")
    parser.add_argument("--mnist", action="store_true",
                        help="MNIST (mnist.npz from --data-dir, $PPL_DGM_DATA or ~/.cache/ppl_dgm) "
                             "instead of the bundled digits")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding mnist.npz, read only (default: $PPL_DGM_DATA, then "
                             "~/.cache/ppl_dgm)")
    parser.add_argument("--out", default=None,
                        help="folder for the figures and run directories (default: "
                             "$PPL_DGM_CACHE/tutorials/NAME or ~/.cache/ppl_dgm/tutorials/NAME)")
    parser.add_argument("--keep", action="store_true",
                        help="keep run directories and checkpoints (default: removed at the end; "
                             "figures are always kept)")
    if argv is None:
        argv = sys.argv[1:]
    # inside Jupyter, argv holds the kernel's own options (-f connection.json): ignore unknown ones
    args, _ = parser.parse_known_args(argv)
    kwargs: dict[str, Any] = {"quick": not args.full, "mnist": args.mnist, "out": args.out,
                              "keep": args.keep}
    if args.data_dir is not None:
        if "data_dir" not in inspect.signature(main).parameters:
            parser.error("--data-dir: this tutorial reads no MNIST files")
        kwargs["data_dir"] = args.data_dir
    return main(**kwargs)
