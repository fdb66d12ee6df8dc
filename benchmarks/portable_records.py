"""Make result records portable: replace this machine's paths in copied run records.

    python benchmarks/portable_records.py benchmarks/results/adgm_kl \\
        --replace "$PPL_DGM_DATA=../shared/data" --replace "$PWD/runs/=runs/"

Run records name the folders a run read and wrote (``config.json``'s ``data_dir``, the commands in
``report.md``, the attributes of ``history.nc``). Before records are kept in the repository, every
``OLD=NEW`` pair is replaced in the ``.json``, ``.md``, ``.csv`` and ``.txt`` files under the given
folders and in the string attributes and variables of their ``.nc`` files; the directory of the
running Python's executables (``.../bin/``) is always dropped (``.../bin/ppl-dgm`` -> ``ppl-dgm``).
Afterwards every file is searched for absolute paths that remain (under the usual home, scratch and
work folders: see ``LEFT``) and they are listed; the exit status is 1 if any remain.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

TEXT = (".json", ".md", ".csv", ".txt")
# absolute paths under the usual home, scratch and work folders (the folder names spelled apart)
LEFT = re.compile("/(?:" + "|".join(("home", "root", "tmp", "work", "Users")) + r")/[^\s\"',)\]]*")


def pairs(items: list[str]) -> list[tuple[str, str]]:
    out = [(str(Path(sys.executable).parent) + "/", "")]
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise SystemExit(f"--replace expects OLD=NEW, got {item!r}")
        out.append((old, new))
    # the longest first, so that a folder inside another is replaced by its own rule
    return sorted(out, key=lambda p: -len(p[0]))


def replace(text: str, rules: list[tuple[str, str]]) -> str:
    for old, new in rules:
        text = text.replace(old, new)
    return text


def rewrite_netcdf(path: Path, rules: list[tuple[str, str]]) -> bool:
    import xarray as xr

    with xr.open_dataset(path) as ds:
        ds = ds.load()
    changed = False
    for holder in [ds, *ds.variables.values()]:
        for key, value in list(holder.attrs.items()):
            if isinstance(value, str) and replace(value, rules) != value:
                holder.attrs[key] = replace(value, rules)
                changed = True
    if changed:
        ds.to_netcdf(path)
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--replace", action="append", default=[], metavar="OLD=NEW")
    args = parser.parse_args()
    rules = pairs(args.replace)
    left: list[str] = []
    for folder in args.folders:
        for path in sorted(folder.rglob("*")):
            if path.suffix in TEXT:
                text = path.read_text()
                new = replace(text, rules)
                if new != text:
                    path.write_text(new)
                    print(f"rewrote {path}")
                left += [f"{path}: {m.group(0)}" for m in LEFT.finditer(new)]
            elif path.suffix == ".nc":
                if rewrite_netcdf(path, rules):
                    print(f"rewrote {path}")
                import xarray as xr

                with xr.open_dataset(path) as ds:
                    strings = [v for v in ds.attrs.values() if isinstance(v, str)]
                left += [f"{path}: {m.group(0)}" for s in strings for m in LEFT.finditer(s)]
    for line in left:
        print("machine path left:", line)
    return 1 if left else 0


if __name__ == "__main__":
    raise SystemExit(main())
