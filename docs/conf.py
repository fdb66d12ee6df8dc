"""Sphinx configuration of the ppl-dgm documentation.

Build: ``pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html``.

Pages are generated when the build starts (``config-inited``; ``_pages.py``). Into files that git
ignores: the API reference (one ``automodule`` per module of ``ppl_dgm``, ``ppl_dgm.models`` and
``ppl_dgm.guides``) and one page per tutorial, made from the jupytext percent script in
``tutorials/`` (markdown cells as prose, code cells as code) followed by the output that
``python docs/run_tutorials.py`` stored in ``docs/tutorials/outputs/<name>/`` (printed text and
figures). The build never runs a tutorial. Into files that are committed (so that they read on
the repository's web view too; ``tests/test_docs.py`` checks that they are up to date):
``options.md`` (the table :data:`ppl_dgm.config.OPTIONS` and the ``train`` command's own flags) and
``exit_codes.md`` (:data:`ppl_dgm.errors.EXIT_CODES_HELP` and the error classes).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _pages import (  # noqa: E402
    docstring_as_text_if_not_rst,
    readme_as_usage,
    write_api_page,
    write_exit_codes_page,
    write_options_page,
    write_tutorial_pages,
)

project = "ppl-dgm"
author = "ppl-dgm contributors"
copyright = "ppl-dgm contributors"  # noqa: A001

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.mathjax"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# links between pages are written as relative .md paths (they work on the repository's web view
# too); the README's own links are turned to this site's pages when it becomes the usage page
myst_all_links_external = False
exclude_patterns = ["_build", "tutorials/outputs"]
html_theme = "alabaster"
html_title = "ppl-dgm"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# each object documented once, in the module that defines it (a name re-exported through a
# module's __all__, such as ppl_dgm.registry.ModelSpec, would be a second, ambiguous target)
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
nitpicky = False
# "--resume" in help texts and docstrings stays two hyphens (not an en dash), quotes stay straight
smartquotes = False


def _generate(app, config) -> None:
    write_api_page(HERE / "api.md")
    write_options_page(HERE / "options.md")
    write_exit_codes_page(HERE / "exit_codes.md")
    write_tutorial_pages(HERE.parent / "tutorials", HERE / "tutorials")


def _usage_page(app, docname: str, source: list[str]) -> None:
    """``usage`` is the README (``source-read``: its text replaces the page's placeholder)."""
    if docname == "usage":
        source[0] = readme_as_usage((HERE.parent / "README.md").read_text())


def setup(app):
    app.connect("config-inited", _generate)
    app.connect("source-read", _usage_page)
    app.connect("autodoc-process-docstring", docstring_as_text_if_not_rst)
