"""Finding a model/guide pair that lives outside the library (backend-neutral: imports nothing heavy).

A model name given to ``ppl-dgm train`` (or to :func:`ppl_dgm.registry.resolve_spec`) is, in order:

1. a registered name (``m2``, ``vae``, ...: :mod:`ppl_dgm.registry`);
2. ``path/to/file.py:build`` (``:build`` may be left out) -- the file is loaded as a module, its
   folder put on ``sys.path`` so that it can import its sibling files;
3. ``package.module:build`` -- an importable module;
4. a name of the entry point group ``ppl_dgm.models`` of an installed package.

:func:`~ppl_dgm.registry.resolve_spec` looks up the registered names itself and asks :func:`find`
for the others: this module knows nothing of the registry.

The object found is a build function decorated with :func:`ppl_dgm.spec.model_spec` or a
:class:`~ppl_dgm.spec.ModelSpec` (both importable from :mod:`ppl_dgm.registry` too); its ``source``
(kept in the run's ``config.json``) records where it came from -- the file's absolute path and
sha256, the module, or the entry point -- so that ``evaluate``, ``sample`` and ``--resume`` load the
same pair, fail with a clear message when it is gone and warn when the file changed. The contract
a pair must meet: :mod:`ppl_dgm.contract`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import re
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from ppl_dgm.contract import ContractError, PairWarning
from ppl_dgm.spec import ModelSpec

GROUP = "ppl_dgm.models"
_FILE_MODULES: dict[tuple[str, str], ModuleType] = {}


class UnknownModelError(KeyError):
    """No registered name, entry point or reference matches (a ``KeyError`` with a plain message)."""

    def __str__(self) -> str:
        return str(self.args[0])


class SourceGoneError(FileNotFoundError):
    """A run's pair can no longer be found where the run recorded it."""


def is_reference(name: str) -> bool:
    """``file.py[:attr]`` or ``module:attr`` rather than a registered or entry-point name."""
    return ":" in name or name.endswith(".py")


def split_reference(reference: str) -> tuple[str, str]:
    """``("path/to/file.py", "build")`` or ``("package.module", "build")`` (``build`` if no ``:``)."""
    target, sep, attribute = reference.rpartition(":")
    if not sep or not attribute.isidentifier():
        # no ":", or the ":" belongs to the path (e.g. a drive letter): the attribute is ``build``
        return reference, "build"
    return target, attribute


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------- loading
def load_file(path: str | Path) -> ModuleType:
    """Import ``path`` as a module of its own (once per content); its folder goes on ``sys.path``."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ContractError(f"no file {path}: give the pair as path/to/file.py:build")
    digest = sha256(path)
    key = (str(path), digest)
    if key in _FILE_MODULES:
        return _FILE_MODULES[key]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_ppl_dgm_user_{stem}_{digest[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ContractError(f"{path} cannot be imported as Python: give a .py file")
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # as ``python path/to/file.py`` would
    sys.modules[name] = module  # dataclasses (flax modules) look their module up while defined
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        del sys.modules[name]
        raise ContractError(f"{path}:{err.lineno}: syntax error: {err.msg}") from err
    except ImportError as err:  # the pair's own import (a missing package, a misspelt name)
        del sys.modules[name]
        # the CLI appends the line that failed (ppl_dgm.contract.error_origin: "at FILE:LINE")
        missing = f"no module named {err.name!r}" if isinstance(err, ModuleNotFoundError) and \
            err.name else str(err).strip().splitlines()[0] if str(err).strip() else "ImportError"
        raise ContractError(f"{path}: importing the pair failed: {missing}",
                            "install what it imports, or fix the import line") from err
    except BaseException:
        del sys.modules[name]
        raise
    _FILE_MODULES[key] = module
    return module


def load_module(module: str) -> ModuleType:
    """``importlib.import_module`` with a clear error when the module itself is missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and (module == err.name or module.startswith(err.name + ".")):
            raise ContractError(
                f"no module named {module!r}: install its package or add its folder to PYTHONPATH, "
                "or give the pair as path/to/file.py:build") from err
        raise


def as_spec(obj: Any, where: str, default_name: str, source: dict[str, Any] | None) -> ModelSpec:
    """The :class:`ModelSpec` of a build function decorated with ``model_spec``, or ``obj``."""
    if isinstance(obj, ModelSpec):
        spec = obj
    elif callable(obj) and isinstance(getattr(obj, "spec", None), ModelSpec):
        spec = obj.spec
    elif callable(obj):
        raise ContractError(
            f"{where} does not say its task: decorate it with "
            "@ppl_dgm.registry.model_spec(task=\"unsupervised\", hparams={...}, train={...}) "
            "(or point to a ModelSpec)")
    else:
        raise ContractError(f"{where} is a {type(obj).__name__}, not a build function or a ModelSpec: "
                            "point to `def build(hparams, data)` decorated with model_spec")
    return dataclasses.replace(spec, name=spec.name or default_name, source=source)


def _attribute(module: ModuleType, attribute: str, where: str) -> Any:
    if not hasattr(module, attribute):
        found = sorted(n for n, v in vars(module).items()
                       if not n.startswith("_") and (isinstance(v, ModelSpec) or
                                                     isinstance(getattr(v, "spec", None), ModelSpec)))
        hint = f"; it has {found}" if found else ""
        raise ContractError(f"{where} has no {attribute!r}: define `def {attribute}(hparams, data)` "
                            f"returning the pair, or name another function after ':'{hint}")
    return getattr(module, attribute)


def from_reference(reference: str) -> ModelSpec:
    """The spec of ``path/to/file.py:build`` or ``package.module:build``, with its ``source``."""
    target, attribute = split_reference(reference)
    looks_like_file = target.endswith(".py") or "/" in target or "\\" in target
    if looks_like_file:
        path = Path(target).expanduser().resolve()
        module = load_file(path)
        source = {"kind": "file", "reference": reference, "path": str(path),
                  "attribute": attribute, "sha256": sha256(path)}
        default_name = path.stem
        where = f"{path}"
    else:
        module = load_module(target)
        file = getattr(module, "__file__", None)
        source = {"kind": "module", "reference": reference, "module": target,
                  "attribute": attribute, "path": file, "sha256": sha256(file) if file else None}
        default_name = target.rpartition(".")[2]
        where = f"module {target}"
    return as_spec(_attribute(module, attribute, where), f"{where}:{attribute}", default_name, source)


def entry_points(name: str | None = None) -> list[importlib.metadata.EntryPoint]:
    """The installed entry points of group ``ppl_dgm.models`` (those called ``name`` if given)."""
    eps = importlib.metadata.entry_points(group=GROUP)
    return [ep for ep in eps if name is None or ep.name == name]


def _distribution(ep: importlib.metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else None


def entry_point_specs(ep: importlib.metadata.EntryPoint) -> list[ModelSpec]:
    """The specs an entry point gives (a ModelSpec, a decorated build function, or a list of them)."""
    where = f"entry point {ep.name} = {ep.value}" + (f" ({_distribution(ep)})" if _distribution(ep)
                                                       else "")
    try:
        obj = ep.load()
    except Exception as err:
        raise ContractError(f"{where} failed to load: {type(err).__name__}: {err}") from err
    source = {"kind": "entry_point", "name": ep.name, "value": ep.value,
              "distribution": _distribution(ep)}
    objs = obj if isinstance(obj, list | tuple) else [obj]
    return [dataclasses.replace(as_spec(o, where, ep.name, source), name=ep.name) for o in objs]


def from_entry_point(name: str, backend: str | None) -> ModelSpec | None:
    """The spec of entry point ``name`` (for ``backend`` if given), or None if there is none."""
    specs = [spec for ep in entry_points(name) for spec in entry_point_specs(ep)]
    if not specs:
        return None
    for spec in specs:
        if backend is None or spec.backend == backend:
            return spec
    raise UnknownModelError(f"entry point {name!r} gives a {specs[0].backend} pair, not a {backend} "
                            f"one: drop --backend {backend}")


# ------------------------------------------------------------------------------------- a run's source
def from_source(source: dict[str, Any], backend: str | None = None) -> ModelSpec:
    """The spec a run recorded, found again; a clear error when it is gone, a warning if changed."""
    kind = source.get("kind")
    fix = "or point \"source\" in the run's config.json to where it is now"
    if kind == "file":
        path = Path(source["path"])
        if not path.is_file():
            raise SourceGoneError(f"this run's pair came from {path} (:{source['attribute']}), which "
                                  f"is gone: put the file back there, {fix}")
        _warn_if_changed(path, source.get("sha256"))
        module = load_file(path)
        spec = _attribute(module, source["attribute"], str(path))
        return as_spec(spec, f"{path}:{source['attribute']}", path.stem, source)
    if kind == "module":
        try:
            module = importlib.import_module(source["module"])
        except ModuleNotFoundError as err:
            raise SourceGoneError(f"this run's pair came from module {source['module']}, which "
                                  f"cannot be imported any more ({err}): reinstall it or add its "
                                  f"folder to PYTHONPATH, {fix}") from err
        if source.get("path") and getattr(module, "__file__", None):
            _warn_if_changed(Path(module.__file__), source.get("sha256"))
        spec = _attribute(module, source["attribute"], f"module {source['module']}")
        return as_spec(spec, f"{source['module']}:{source['attribute']}",
                       source["module"].rpartition(".")[2], source)
    if kind == "entry_point":
        found = entry_points(source["name"])
        if not found:
            dist = source.get("distribution") or "its package"
            raise SourceGoneError(f"this run's pair came from the entry point {source['name']} = "
                                  f"{source['value']} of {dist}, which is not installed any more: "
                                  "reinstall that package")
        specs = [s for ep in found for s in entry_point_specs(ep)]
        chosen = [s for s in specs if backend is None or s.backend == backend] or specs
        return dataclasses.replace(chosen[0], source=source)
    raise ContractError(f"unknown pair source {source!r} in the run's config.json")


_WARNED_CHANGED: set[tuple[str, str, str]] = set()


def _warn_if_changed(path: Path, digest: str | None) -> None:
    """Warn once per process and change (``sample`` and ``evaluate`` find a run's pair more than
    once: the warning was printed twice) that ``path`` is no longer the file the run recorded."""
    if digest and path.is_file():
        now = sha256(path)
        key = (str(path), digest, now)
        if now != digest and key not in _WARNED_CHANGED:
            _WARNED_CHANGED.add(key)
            warnings.warn(f"{path} changed since this run was trained (sha256 {digest[:12]} -> "
                          f"{now[:12]}); its checkpoint may no longer fit the pair",
                          PairWarning, stacklevel=3)


# ------------------------------------------------------------------------------------- resolution
def find(name: str, backend: str | None = None,
         source: dict[str, Any] | None = None) -> ModelSpec | None:
    """The pair outside the library that ``name`` means: the run's recorded ``source`` if given,
    else the reference ``path/to/file.py:build`` / ``package.module:build``, else the entry point
    ``name``; ``None`` when ``name`` is none of these. The registered names come first:
    :func:`ppl_dgm.registry.resolve_spec` looks them up before it asks here."""
    if source:
        spec = from_source(source, backend)
    elif is_reference(name):
        spec = from_reference(name)
    else:
        spec = from_entry_point(name, backend)
        if spec is None:
            return None
    if backend is not None and spec.backend != backend:
        raise ContractError(f"{name} is a {spec.backend} pair (its spec says backend="
                            f"{spec.backend!r}), not a {backend} one: drop --backend {backend} or "
                            f"give a {backend} build function")
    return spec
