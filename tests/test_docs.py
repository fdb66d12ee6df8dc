"""The Sphinx site under docs/ builds with warnings as errors (the tutorials are not run: their
pages show the output stored under docs/tutorials/outputs/)."""

from __future__ import annotations

import re
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
    # the usage page is the README, its links turned to the pages of the site
    usage = (html / "usage.html").read_text()
    assert "Writing a new model/guide pair" in usage
    for stem in stems:
        assert f'href="tutorials/{stem}.html"' in usage, stem
    for page in README_PAGES:
        assert f'href="{page}.html"' in usage, page
    # the API reference documents the models and guides, once each (where they are defined)
    api = (html / "api.html").read_text()
    # no raw reST markup on the page (docstrings shown as plain text drop their inline marks)
    assert "``" not in api and ":class:`" not in api
    for name in ("ppl_dgm.models.m2.M2Model", "ppl_dgm.guides.ladder.precision_weighted_merge",
                 "ppl_dgm.plots.image_grid", "ppl_dgm.api.train", "ppl_dgm.api.Run"):
        assert api.count(f'id="{name}"') == 1, name
    # the reference pages that left the README
    from ppl_dgm.config import OPTIONS
    from ppl_dgm.errors import EXIT_CODES_HELP

    options = (html / "options.html").read_text()
    literal = '<code class="docutils literal notranslate"><span class="pre">{}</span>'
    for name, opt in OPTIONS.items():
        assert literal.format(name) in options, name
        assert not opt.flag or opt.flag in options, opt.flag
    for flag in ("--out", "--resume", "--set", "--data-option", "--no-progress", "--distributed"):
        assert flag in options, flag
    assert "\u2013" not in options  # --flags stay two hyphens (no smart dashes)
    exit_codes = (html / "exit_codes.html").read_text()
    for code in re.findall(r"^  (\d+) ", EXIT_CODES_HELP, re.M):
        assert f"<td><p>{code}</p></td>" in exit_codes, code
    python_api = (html / "python_api.html").read_text()
    for call in ("ppl_dgm.train", "ppl_dgm.load", "run.evaluate", "run.sample", "run.resume",
                 "ppl_dgm.compare", "ppl_dgm.sweep", "ppl_dgm.reproduce", "my_pair.py:build"):
        assert call in text_of(python_api), call
    for method in ("train", "load", "Run", "evaluate", "sample", "resume"):  # the autodoc entries
        assert f'<span class="sig-name descname"><span class="pre">{method}</span>' in python_api, method
    for page, words in (("objectives", ("trace_enum", "rws:K", "comparison.nc")),
                        ("threads", ("torchrun", "--distributed", "sweep.nc")),
                        ("run_directory", (".lock", "stale-epoch-E", "atomic", "--resume")),
                        ("training", ("svhn", "norb", "omniglot", "--preset", "adgm-mnist100")),
                        ("results", ("benchmarks/results/", "11.97%"))):
        text = text_of((html / f"{page}.html").read_text())
        for word in words:
            assert word in text, (page, word)


def text_of(page: str) -> str:
    """The text of an HTML page (tags dropped: highlighted code is split into spans)."""
    import html

    return html.unescape(re.sub(r"<[^>]+>", "", page))


#: The pages of the site that the README links (docs/NAME.md).
README_PAGES = ("python_api", "options", "training", "objectives", "threads", "run_directory",
                "exit_codes", "results")


def test_generated_pages_are_up_to_date():
    """docs/options.md and docs/exit_codes.md are generated (docs/_pages.py) and committed: the
    committed text is what the table and the errors module give now."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import _pages
    finally:
        sys.path.remove(str(ROOT / "docs"))
    for name, text in (("options.md", _pages.options_page()),
                       ("exit_codes.md", _pages.exit_codes_page())):
        assert (ROOT / "docs" / name).read_text() == text, \
            f"docs/{name} is out of date: build the docs (or call docs/_pages.py) and commit it"


def test_readme_lists_only_what_exists():
    """The README: its links lead to files of the repository, its test command is what .ci/run
    runs, and it names every data set, every claim of reproduce and every command."""
    from ppl_dgm.data import DATASETS
    from ppl_dgm.reproduction import CLAIMS

    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", readme):
        if not re.match(r"[a-z]+:", target):
            assert (ROOT / target).exists(), f"the README links {target}, which does not exist"
    for page in README_PAGES:
        assert f"](docs/{page}.md)" in readme, page
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = re.search(r"^python -m pytest .*$", ci, re.M).group(0)
    assert f"&& {test_command}\n" in readme, "the README's test command is not .ci/run's"
    for name in DATASETS:
        assert f"`{name}`" in readme, name
    for claim in CLAIMS:
        assert f"`{claim}`" in readme, claim
    for command in ("train", "evaluate", "sample", "compare", "sweep", "reproduce"):
        assert f"ppl-dgm {command} " in readme and (
            f"ppl_dgm.{command}(" in readme or f"run.{command}(" in readme), command


def test_readme_links_every_tutorial_in_order():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Tutorials"):]
    section = section[:section.index("\n## ", 1)]
    linked = re.findall(r"\]\(tutorials/(\d\d_\w+)\.py\)", section)
    stems = [p.stem for p in sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))]
    assert linked == sorted(linked), "the README lists the tutorials in order"
    assert set(stems) <= set(linked), f"tutorials missing from the README: {set(stems) - set(linked)}"
    assert all((ROOT / "tutorials" / f"{stem}.py").is_file() for stem in linked), \
        "the README links a tutorial that does not exist"
