"""The package's modules import each other without circles.

Every ``import`` and ``from ... import`` statement counts, at module level and inside functions or
``if TYPE_CHECKING:`` blocks alike: an import hidden in a function still ties the two modules
together (each needs the other to work), it only postpones the failure of a circle to run time.
The graph covers ``ppl_dgm/``, ``models/`` (installed as ``ppl_dgm.models``), ``guides/``
(``ppl_dgm.guides``) and ``benchmarks/`` (scripts that import each other by bare module name, e.g.
``from throughput import ...``). ``from pkg import name`` is an edge to the submodule ``pkg.name``
when that is a module, else to ``pkg``; the implicit import of parent packages' ``__init__`` is not
an edge. Only the command line (``ppl_dgm.cli``) may import ``ppl_dgm.cli``: it is the top.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folder -> the dotted name of its modules (``None``: benchmark scripts, named by their bare stem)
SOURCES = {"ppl_dgm": "ppl_dgm", "models": "ppl_dgm.models", "guides": "ppl_dgm.guides",
           "benchmarks": None}


def module_files(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """Every module's dotted name -> (its file, whether it is a package ``__init__``)."""
    modules: dict[str, tuple[Path, bool]] = {}
    for folder, prefix in SOURCES.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            if prefix is None:  # benchmarks/x.py is the bare top-level module ``x``
                if is_package or len(parts) != 1:
                    continue
                modules[parts[0]] = (path, False)
            else:
                modules[".".join([prefix, *parts])] = (path, is_package)
    return modules


def _known(name: str, modules: Mapping[str, object]) -> str | None:
    """``name`` if it is one of ``modules`` (``benchmarks.x`` is the benchmark ``x``), else None (a
    module from elsewhere, or one that does not exist: importing it would fail, it is no edge)."""
    if name.startswith("benchmarks.") and name.removeprefix("benchmarks.") in modules:
        name = name.removeprefix("benchmarks.")
    return name if name in modules else None


def imports_of(module: str, path: Path, is_package: bool,
               modules: Mapping[str, object]) -> set[str]:
    """The modules of ``modules`` that ``module`` imports, anywhere in its file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules)
                if target is not None:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                # the submodule ``base.name`` if it is one, else a name defined in ``base``
                target = (_known(f"{base}.{alias.name}", modules) or _known(base, modules) if base
                          else _known(alias.name, modules))
                if target is not None:
                    found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules it imports (both among the package, its models, guides, benchmarks)."""
    modules = module_files(root)
    return {name: imports_of(name, path, is_package, modules)
            for name, (path, is_package) in modules.items()}


@functools.cache
def package_graph() -> dict[str, set[str]]:
    """:func:`import_graph` of this repository, parsed once per test session."""
    return import_graph()


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` (iterative), each sorted; nodes that are
    only targets count as nodes without edges."""
    edges = {node: sorted(set(targets)) for node, targets in graph.items()}
    for targets in list(edges.values()):
        for target in targets:
            edges.setdefault(target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges[node]
            while position < len(targets):
                target = targets[position]
                position += 1
                if target not in index:
                    work.append((node, position))
                    work.append((target, 0))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return components


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The circles of ``graph``: its strongly connected components of more than one node, and the
    nodes that import themselves."""
    return sorted(component for component in strongly_connected(graph)
                  if len(component) > 1 or component[0] in graph.get(component[0], ()))


def _describe(component: list[str], graph: Mapping[str, Iterable[str]]) -> str:
    members = set(component)
    inner = [f"    {node} -> {', '.join(sorted(set(graph.get(node, ())) & members))}"
             for node in component]
    return "  {" + ", ".join(component) + "}\n" + "\n".join(inner)


def test_cycle_finder_on_a_small_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": set(), "f": {"f"},
             "g": {"h"}, "h": {"d"}}
    assert cycles(graph) == [["a", "b", "c"], ["f"]]
    assert sorted(strongly_connected(graph)) == [["a", "b", "c"], ["d"], ["e"], ["f"], ["g"], ["h"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    # two circles joined through one node are one component
    assert cycles({"a": {"b"}, "b": {"a", "c"}, "c": {"b"}, "x": {"y"}}) == [["a", "b", "c"]]


def test_import_resolution(tmp_path):
    pkg = tmp_path / "ppl_dgm"
    (pkg / "data").mkdir(parents=True)
    (tmp_path / "models").mkdir()
    (tmp_path / "guides").mkdir()
    (tmp_path / "benchmarks").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("from .sequence import x\nVALUE = 1\n")
    (pkg / "data" / "sequence.py").write_text("def f():\n    from ppl_dgm.data import VALUE\n")
    (pkg / "other.py").write_text("from ppl_dgm import data\nimport ppl_dgm.data.sequence\n"
                                  "from . import errors\n")
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "models" / "m.py").write_text("from ..guides import g\nfrom ppl_dgm.models import m\n")
    (tmp_path / "guides" / "g.py").write_text("import numpy\n")
    (tmp_path / "benchmarks" / "bench.py").write_text("from helper import y\nimport ppl_dgm.other\n")
    (tmp_path / "benchmarks" / "helper.py").write_text("def y():\n    import bench\n")
    graph = import_graph(tmp_path)
    assert graph == {
        "ppl_dgm": set(),
        "ppl_dgm.data": {"ppl_dgm.data.sequence"},
        "ppl_dgm.data.sequence": {"ppl_dgm.data"},
        "ppl_dgm.other": {"ppl_dgm", "ppl_dgm.data", "ppl_dgm.data.sequence"},
        "ppl_dgm.models": set(),
        "ppl_dgm.models.m": {"ppl_dgm.guides.g", "ppl_dgm.models.m"},
        "ppl_dgm.guides.g": set(),
        "bench": {"helper", "ppl_dgm.other"},
        "helper": {"bench"},
    }
    assert cycles(graph) == [["bench", "helper"], ["ppl_dgm.data", "ppl_dgm.data.sequence"],
                             ["ppl_dgm.models.m"]]


def test_no_import_circles():
    graph = package_graph()
    found = cycles(graph)
    assert not found, ("import circles (every import counts, also inside functions):\n"
                       + "\n".join(_describe(component, graph) for component in found))


def _is_cli(module: str) -> bool:
    return module == "ppl_dgm.cli" or module.startswith("ppl_dgm.cli.")


def test_only_the_command_line_imports_the_command_line():
    graph = package_graph()
    offenders = sorted(module for module, targets in graph.items()
                       if not _is_cli(module) and any(_is_cli(target) for target in targets))
    assert not offenders, f"modules that import ppl_dgm.cli (only the command line may): {offenders}"
