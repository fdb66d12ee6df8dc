"""The Sphinx site under docs/ builds with warnings as errors (the tutorials are not run: their
pages show the output stored under docs/tutorials/outputs/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("myst_parser", reason="the docs extra is not installed")
    pytest.importorskip("jupytext", reason="the docs extra is not installed")
    html = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(html)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # every tutorial has its page, listed in order on the tutorials index
    stems = [p.stem for p in sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))]
    assert stems
    index = (html / "tutorials" / "index.html").read_text()
    positions = [index.index(f'href="{stem}.html"') for stem in stems]
    assert positions == sorted(positions)
    for stem in stems:
        page = (html / "tutorials" / f"{stem}.html").read_text()
        assert '<span class="nf">main</span>' in page  # the code cells, highlighted
        outputs = ROOT / "docs" / "tutorials" / "outputs" / stem
        for figure in outputs.glob("*.png"):  # stored figures are shown and copied
            assert figure.name in page and any(html.rglob(figure.name))
    # the usage page is the README; the API reference documents the models and guides
    assert "Writing a new model/guide pair" in (html / "usage.html").read_text()
    api = (html / "api.html").read_text()
    # no raw reST markup on the page (docstrings shown as plain text drop their inline marks)
    assert "``" not in api and ":class:`" not in api
    for name in ("ppl_dgm.models.m2.M2Model", "ppl_dgm.guides.ladder.precision_weighted_merge",
                 "ppl_dgm.plots.image_grid"):
        assert f'id="{name}"' in api, name


def test_readme_links_every_tutorial_in_order():
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Tutorials"):]
    section = section[:section.index("\n## ", 1)]
    linked = re.findall(r"\]\(tutorials/(\d\d_\w+)\.py\)", section)
    stems = [p.stem for p in sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))]
    assert linked == sorted(linked), "the README lists the tutorials in order"
    assert set(stems) <= set(linked), f"tutorials missing from the README: {set(stems) - set(linked)}"
    assert all((ROOT / "tutorials" / f"{stem}.py").is_file() for stem in linked), \
        "the README links a tutorial that does not exist"
