"""Pieces shared by the commands: ``KEY=VALUE`` lists and the training options as flags."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from ppl_dgm.config import OPTIONS, parse_value
from ppl_dgm.errors import UserError
from ppl_dgm.options import argparse_kwargs


def key_values(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    """``["z_dim=32", "lr=0.1"]`` -> ``{"z_dim": 32, "lr": 0.1}`` (values parsed as JSON when
    they parse); a malformed item raises :class:`UserError` naming ``flag``."""
    out = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} expects KEY=VALUE, got {item!r}", f"e.g. {flag} z_dim=32")
        out[key] = parse_value(value)
    return out


def add_train_options(parser: argparse.ArgumentParser, exclude: Iterable[str] = (),
                      suffix: str = "", default_from: str | None = "the model's, else ") -> None:
    """One flag per training option of :data:`ppl_dgm.config.OPTIONS` that has one (minus
    ``exclude``), its help and default from the table."""
    exclude = set(exclude)
    for name, opt in OPTIONS.items():
        if opt.flag and name not in exclude:
            kwargs = argparse_kwargs(opt, default_from)
            kwargs["help"] += suffix
            parser.add_argument(opt.flag, **kwargs)


def train_options(args: argparse.Namespace, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The training options given on the command line (flags left out are not included)."""
    exclude = set(exclude)
    return {name: getattr(args, name) for name, opt in OPTIONS.items()
            if opt.flag and name not in exclude and getattr(args, name, None) is not None}
