"""The run directory: configuration, history (xarray -> netCDF), summary and evaluation records.

Every file is written atomically (to a temporary file in the same folder, then ``os.replace``), so a
run interrupted while writing never leaves a truncated record behind.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

CONFIG = "config.json"
HISTORY = "history.nc"
SUMMARY = "summary.json"
EVALUATION = "evaluation.json"
CHECKPOINT = "checkpoint.pt"


TEMPORARY_SUFFIX = ".part"
# atomic_write's temporaries: ``.NAME.XXXXXXXX.part`` (older versions: without ``.part``)
_TEMPORARY = re.compile(r"\.(?P<name>[^/]+\.[^./]+)\.[a-z0-9_]{8}(\.part)?")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path``.

    The file gets the permissions of the user's umask (as ``open`` would give it); when writing
    fails (a full disk), the temporary file is removed and the previous ``path`` is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        try:
            write(tmp)
        except (RuntimeError, ValueError) as err:
            failed = _write_failure(err, path)
            if failed is None:
                raise
            raise failed from err
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


#: What writers that are not Python's file objects say when the disk fills or a write fails: torch's
#: zip writer (``torch.save``: "[enforce fail at inline_container.cc:672] . unexpected pos N vs M",
#: "PytorchStreamWriter failed writing file ...: file write failed"), HDF5 and netCDF
#: ("Can't write data", "No space left on device", "HDF error").
_WRITE_FAILURE = re.compile(r"unexpected pos|file write failed|failed writing file|can't write data|"
                            r"no space left|disk quota|hdf error|write failed", re.IGNORECASE)


def _write_failure(err: BaseException, path: Path) -> OSError | None:
    """The ``OSError`` that ``err``, raised by a library's writer, stands for when it is a failed
    write (:data:`_WRITE_FAILURE`): ``ENOSPC`` (no space left) when the folder's file system has
    less than 1 MiB free, else ``EIO``; None for any other error (a bug, raised as it is). So a
    full disk during ``torch.save`` reads "no space left on the device while writing PATH" with
    exit status 5, as for any other file."""
    import errno
    import shutil

    if not _WRITE_FAILURE.search(str(err)):
        return None
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < 1 << 20:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    first = (str(err).strip().splitlines() or [""])[0]
    return OSError(errno.EIO, f"the write failed ({first})", str(path))


def clean_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove the temporaries that :func:`atomic_write` left in ``folder`` when its process was
    killed mid-write (call it only while no other process writes there); returns their names."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if _TEMPORARY.fullmatch(entry.name) and entry.is_file():
            try:
                entry.unlink()
                removed.append(entry.name)
            except FileNotFoundError:
                pass
    return removed


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays become numbers and lists, and non-finite numbers
    (an infinite Pareto-k from too few importance samples, a NaN loss) become ``null``."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as strict JSON (see :func:`_jsonable`), atomically."""
    text = json.dumps(_jsonable(data), indent=2, sort_keys=True, allow_nan=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``path``. A file that is not valid JSON (truncated, edited by hand) raises
    :class:`~ppl_dgm.errors.RunDirectoryError` (a ``ValueError``, exit status 2) naming the file
    and where it breaks, not JSON's bare ``Expecting value: line 2 column 1``."""
    from ppl_dgm.errors import RunDirectoryError

    path = Path(path)
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        what = "is empty" if not text.strip() else f"is not valid JSON ({err})"
        raise RunDirectoryError(f"{path} {what}",
                                "restore it from a copy, or start a new run elsewhere (a record "
                                "cut short by a full disk or an editor)") from err


def history_dataset(records: list[dict[str, Any]], attrs: dict[str, Any]) -> xr.Dataset:
    """Per-epoch records -> Dataset with dim ``epoch``; dict-valued entries get a second dim.

    ``{"kl": {"z1": .., "z2": ..}}`` becomes variable ``kl`` with dims ``(epoch, site)``.
    """
    epochs = [r["epoch"] for r in records]
    data_vars: dict[str, Any] = {}
    keys = sorted({k for r in records for k in r if k != "epoch"})
    # one site axis for every dict-valued entry (NaN where an entry lacks a site: the KL has a
    # discrete y, the active units only the continuous sites)
    sites = sorted({n for r in records for v in r.values() if isinstance(v, dict) for n in v})
    for key in keys:
        values = [r.get(key) for r in records]
        if any(isinstance(v, dict) for v in values):
            table = [[(v or {}).get(n, np.nan) for n in sites] for v in values]
            data_vars[key] = (("epoch", "site"), np.asarray(table, dtype=float))
            continue
        data_vars[key] = ("epoch", np.asarray([np.nan if v is None else v for v in values],
                                              dtype=float))
    coords: dict[str, Any] = {"epoch": epochs}
    if sites:
        coords["site"] = sites
    clean_attrs = {k: json.dumps(_jsonable(v)) if not isinstance(v, (str, int, float)) else v
                   for k, v in attrs.items()}
    return xr.Dataset(data_vars, coords=coords, attrs=clean_attrs)


def write_history(path: str | os.PathLike, records: list[dict[str, Any]],
                  attrs: dict[str, Any]) -> None:
    ds = history_dataset(records, attrs)
    atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))


def read_history(path: str | os.PathLike) -> xr.Dataset:
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def environment(device: str) -> dict[str, Any]:
    """Library versions and the machine, recorded in every result file."""
    from importlib import metadata

    from ppl_dgm.threads import threads_in_use

    versions = {}
    for package in ("ppl-dgm", "torch", "pyro-ppl", "numpy", "xarray", "jax", "numpyro"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {"versions": versions, "device": device, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(), "threads": threads_in_use()}
