"""Pages the docs build generates: the API reference and the tutorials (see ``conf.py``)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

PACKAGES = ("ppl_dgm", "ppl_dgm.models", "ppl_dgm.guides")
#: Modules left out of the reference (command-line entry point only documented through --help).
SKIP: set[str] = set()


def _write_if_changed(path: Path, text: str) -> None:
    """Rewrite ``path`` only when its text changes (Sphinx then rebuilds only what changed)."""
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    names = []
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        if info.name.split(".")[-1].startswith("_") or info.name in SKIP:
            continue
        if package == "ppl_dgm" and info.name.startswith(("ppl_dgm.models", "ppl_dgm.guides")):
            continue
        names.append(info.name)
    return sorted(names)


def write_api_page(path: Path) -> None:
    lines = ["# API reference", "",
             "Generated from the docstrings. The Pyro and NumPyro twins of a model sit side by side "
             "(`*_numpyro` modules need the `jax` extra).", ""]
    titles = {"ppl_dgm": "The library", "ppl_dgm.models": "Generative models (`models/`)",
              "ppl_dgm.guides": "Guides (`guides/`)"}
    for package in PACKAGES:
        lines += [f"## {titles[package]}", ""]
        for name in modules(package):
            lines += [f"### `{name}`", "", "```{eval-rst}", f".. automodule:: {name}", "```", ""]
    _write_if_changed(path, "\n".join(lines))


def tutorial_markdown(script: Path, outputs: Path) -> str:
    """The page of one tutorial: its cells, then the stored output of a run (if any)."""
    import jupytext

    notebook = jupytext.read(script)
    parts = []
    for cell in notebook.cells:
        source = cell.source.strip("\n")
        if not source:
            continue
        if cell.cell_type == "markdown":
            parts.append(source)
        else:
            parts.append(f"```python\n{source}\n```")
    command = f"python tutorials/{script.name}"
    parts.append(f"## Output\n\nThe script is `tutorials/{script.name}`; run it with `{command}` "
                 "(add `--full` for the longer run, `--mnist` for MNIST, `--out DIR` for where its "
                 "files go).")
    text_file = outputs / "output.txt"
    if text_file.is_file():
        header = (outputs / "command.txt").read_text().strip() if (outputs / "command.txt").is_file() \
            else command
        parts.append(f"What `{header}` printed:\n\n```text\n{text_file.read_text().rstrip()}\n```")
        for figure in sorted(outputs.glob("*.png")):
            parts.append(f"```{{image}} outputs/{script.stem}/{figure.name}\n:alt: {figure.stem}\n```")
    else:
        parts.append("(No stored output: run `python docs/run_tutorials.py` to add it.)")
    return "\n\n".join(parts) + "\n"


def write_tutorial_pages(scripts: Path, folder: Path) -> list[str]:
    """One ``<stem>.md`` per ``tutorials/NN_*.py`` and an index listing them in order."""
    stems = []
    for script in sorted(scripts.glob("[0-9][0-9]_*.py")):
        _write_if_changed(folder / f"{script.stem}.md",
                          tutorial_markdown(script, folder / "outputs" / script.stem))
        stems.append(script.stem)
    index = ["# Tutorials", "",
             "Each tutorial is a jupytext percent script in `tutorials/`: run it as a script, or open "
             "it as a notebook (`jupytext --to notebook tutorials/01_m2.py`). Every one runs in a "
             "quick mode on the bundled 8x8 digits (the output below each page), writes its figures "
             "to `~/.cache/ppl_dgm/tutorials/<name>` (or `--out DIR`) and takes `--full` and "
             "`--mnist` for longer runs.", "",
             "```{toctree}", ":maxdepth: 1", "", *stems, "```", ""]
    _write_if_changed(folder / "index.md", "\n".join(index))
    return stems


_ROLE = None


def _rst_problems(text: str) -> str:
    """The warnings plain docutils reports for ``text`` (Sphinx roles replaced by literals)."""
    import io
    import re

    from docutils.core import publish_doctree

    global _ROLE
    if _ROLE is None:
        _ROLE = re.compile(r":(?:[\w-]+:)+`([^`]*)`")
    text = _ROLE.sub(lambda m: f"``{m.group(1)}``", text)
    stream = io.StringIO()
    publish_doctree(text, settings_overrides={"report_level": 2, "halt_level": 5,
                                              "warning_stream": stream, "input_encoding": "unicode"})
    return stream.getvalue()


_INLINE_LITERAL = re.compile(r"``([^`]+?)``", re.S)
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def docstring_as_text_if_not_rst(app, what, name, obj, options, lines: list[str]) -> None:
    """``autodoc-process-docstring``: a docstring that is not valid reStructuredText (many here are
    plain text with indented formulas) is shown verbatim, as a literal block, instead of failing
    the ``-W`` build or rendering garbled."""
    if not lines:
        return
    try:
        problems = _rst_problems("\n".join(lines))
    except Exception as error:  # a construct that needs Sphinx's environment: shown verbatim too
        problems = repr(error)
    if not problems:
        return
    # shown as plain text: the inline-literal marks of the reST it failed to be are dropped
    text = _INLINE_LITERAL.sub(r"\1", "\n".join(lines))
    plain = _ROLE.sub(r"\1", text).split("\n")
    body = [f"    {line}" if line.strip() else "" for line in plain]
    lines[:] = ["::", "", *body, ""]
