"""Sphinx configuration of the ppl-dgm documentation.

Build: ``pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html``.

Two kinds of page are generated when the build starts (``config-inited``), into files that git
ignores: the API reference (one ``automodule`` per module of ``ppl_dgm``, ``ppl_dgm.models`` and
``ppl_dgm.guides``) and one page per tutorial, made from the jupytext percent script in
``tutorials/`` (markdown cells as prose, code cells as code) followed by the output that
``python docs/run_tutorials.py`` stored in ``docs/tutorials/outputs/<name>/`` (printed text and
figures). The build never runs a tutorial.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _pages import docstring_as_text_if_not_rst, write_api_page, write_tutorial_pages  # noqa: E402

project = "ppl-dgm"
author = "ppl-dgm contributors"
copyright = "ppl-dgm contributors"  # noqa: A001

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.mathjax"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# README links point into the repository (tutorials/01_m2.py, ...), not to pages of this site
myst_all_links_external = True
exclude_patterns = ["_build", "tutorials/outputs"]
html_theme = "alabaster"
html_title = "ppl-dgm"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False


def _generate(app, config) -> None:
    write_api_page(HERE / "api.md")
    write_tutorial_pages(HERE.parent / "tutorials", HERE / "tutorials")


def setup(app):
    app.connect("config-inited", _generate)
    app.connect("autodoc-process-docstring", docstring_as_text_if_not_rst)
