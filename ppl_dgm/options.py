"""The table of training options: one :class:`Option` per field of
:class:`ppl_dgm.config.TrainConfig`, written once beside the field (:func:`option`).

Each option has its name, type, default, domain, meaning, and whether a resumed run may change it.
Everything that speaks about options reads this table: the checks of :func:`ppl_dgm.train` and of
``TrainConfig`` itself (:func:`check`), the command line's flags and ``--help``
(:func:`argparse_kwargs`), ``ppl-dgm models NAME``, the resume check (:func:`resumable`), the
docstring of :func:`ppl_dgm.train` (:func:`docstring`) and the options page of the documentation
(:func:`markdown`). Imports nothing of ppl_dgm but its errors.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ppl_dgm.errors import UserError


@dataclass(frozen=True)
class Option:
    """One training option.

    ``kind``: ``"int"``, ``"float"`` (a finite real), ``"str"``, ``"bool"``, ``"pair"`` (two
    numbers) or ``"mapping"``; ``low``/``high`` bound a number (``low_open``/``high_open``: the
    bound itself is excluded); ``choices`` lists a string's values; ``nullable``: ``None`` is
    allowed (it then means what ``help`` says). ``resumable``: ``train --resume`` may change it.
    ``flag``: the ``train`` command's flag (``None``: none of its own); ``flag_form``: how the
    command line gives an option that has no flag of its own (e.g. ``--set KEY=VALUE``).
    ``note``: said beside the default by ``ppl-dgm models NAME`` where the name could mislead.
    ``fix``: the advice of the error for a value outside the domain.
    """

    name: str
    kind: str
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    resumable: bool = False
    flag: str | None = None
    flag_form: str | None = None
    metavar: str | None = None
    note: str | None = None
    fix: str | None = None

    def domain(self) -> str:
        """The domain in words, e.g. ``">= 1"``, ``"in (0, 1]"``, ``"adam | rmsprop"``."""
        if self.choices:
            text = " | ".join(self.choices)
        elif self.kind in ("int", "float"):
            word = "integer" if self.kind == "int" else "number"
            if self.low is not None and self.high is not None:
                text = (f"{word} in {'(' if self.low_open else '['}{_number(self.low)}, "
                        f"{_number(self.high)}{')' if self.high_open else ']'}")
            elif self.low is not None:
                text = f"{word} {'>' if self.low_open else '>='} {_number(self.low)}"
            else:
                text = word
        else:
            text = {"bool": "true | false", "pair": "two numbers", "mapping": "mapping",
                    "str": "text"}[self.kind]
        return text + (" or None" if self.nullable else "")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def option(default: Any, help: str, kind: str | None = None, **domain: Any) -> Any:
    """A ``TrainConfig`` field with its :class:`Option` (the name is filled in by :func:`table`)."""
    kind = kind or _kind_of(default)
    meta = dict(kind=kind, default=default, help=help, **domain)
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata={"option": meta})
    return dataclasses.field(default=default, metadata={"option": meta})


def _kind_of(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "str"
    raise TypeError(f"give the kind of an option whose default is {default!r}")


def table(config_class: type) -> dict[str, Option]:
    """The options of a dataclass whose fields were made by :func:`option`, in field order."""
    out = {}
    for f in dataclasses.fields(config_class):
        meta = f.metadata.get("option")
        if meta is not None:
            out[f.name] = Option(name=f.name, **meta)
    return out


# ---------------------------------------------------------------------------------- checking
def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_value(name: str, value: Any, kind: str, low: float | None = None, low_inclusive: bool = True,
                high: float | None = None, high_inclusive: bool = False, optional: bool = False,
                where: str | None = None, fix: str | None = None) -> None:
    """Raise :class:`UserError` unless ``value`` is of ``kind`` and lies in its bounds."""
    where = where or "--" + name.replace("_", "-")
    if value is None:
        if optional:
            return
        raise UserError(f"{where} needs a value", fix)
    if kind == "int" and not _is_int(value):
        raise UserError(f"{where} must be an integer (got {value!r})", fix)
    if kind == "float" and not (_is_real(value) and math.isfinite(value)):
        raise UserError(f"{where} must be a finite number (got {value!r})", fix)
    if kind in ("int", "float"):
        if low is not None and (value < low or (value == low and not low_inclusive)):
            relation = ">=" if low_inclusive else ">"
            raise UserError(f"{where} must be {relation} {low:g} (got {value!r})", fix)
        if high is not None and (value > high or (value == high and not high_inclusive)):
            relation = "<=" if high_inclusive else "<"
            raise UserError(f"{where} must be {relation} {high:g} (got {value!r})", fix)
    if kind == "str" and not isinstance(value, str):
        raise UserError(f"{where} must be a string (got {value!r})", fix)
    if kind == "bool" and not isinstance(value, bool):
        raise UserError(f"{where} must be true or false (got {value!r})", fix)


def check(opt: Option, value: Any) -> None:
    """``value`` against ``opt``'s kind and domain; a :class:`UserError` names the option."""
    where = opt.flag or opt.name
    if value is None and opt.nullable:
        return
    if opt.choices is not None:
        if value not in opt.choices:
            raise UserError(f"unknown {where} {value!r}", opt.fix or f"choose from {list(opt.choices)}")
        return
    if opt.kind == "pair":
        if (not isinstance(value, list | tuple) or len(value) != 2
                or not all(_is_real(v) and (opt.low is None or v >= opt.low)
                           and (opt.high is None or v < opt.high) for v in value)):
            raise UserError(f"{where} must be two numbers in [{opt.low:g}, {opt.high:g}) "
                            f"(got {value!r})", opt.fix)
        return
    if opt.kind == "mapping":
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping (got {value!r})", opt.fix)
        return
    check_value(opt.name, value, opt.kind, opt.low, not opt.low_open, opt.high, not opt.high_open,
                opt.nullable, where=where, fix=opt.fix)


def resumable(options: dict[str, Option]) -> tuple[str, ...]:
    """The names of the options a resumed run may change."""
    return tuple(name for name, opt in options.items() if opt.resumable)


# -------------------------------------------------------------------------------- rendering
def default_text(opt: Option) -> str:
    return "unset" if opt.default is None else repr(opt.default)


def argparse_kwargs(opt: Option, default_from: str | None = "the model's, else ") -> dict[str, Any]:
    """Keyword arguments of ``add_argument(opt.flag, ...)``: the type, choices and help, with the
    default said (``default_from`` precedes TrainConfig's default: the pair's own comes first)."""
    help_text = opt.help.replace("%", "%%")
    if "default" not in opt.help:
        shown = "unset" if opt.default is None else str(opt.default)
        help_text += f" (default: {default_from or ''}{shown.replace('%', '%%')})"
    kwargs: dict[str, Any] = {"dest": opt.name, "default": None, "help": help_text}
    if opt.kind == "bool":
        kwargs["action"] = "store_const"
        kwargs["const"] = not opt.default
        return kwargs
    if opt.choices is not None:
        kwargs["choices"] = list(opt.choices)
    elif opt.kind in ("int", "float"):
        kwargs["type"] = int if opt.kind == "int" else float
    if opt.metavar:
        kwargs["metavar"] = opt.metavar
    return kwargs


def docstring(options: Iterable[Option]) -> str:
    """One entry per option (name, domain, default, meaning), for ``help(ppl_dgm.train)``."""
    lines = []
    for opt in options:
        lines.append(f"    {opt.name} ({opt.domain()}; default {default_text(opt)}"
                     + ("; may change on resume" if opt.resumable else "") + ")")
        lines += textwrap.wrap(opt.help, 96, initial_indent=" " * 8, subsequent_indent=" " * 8)
    return "\n".join(lines)


def markdown(options: Iterable[Option]) -> str:
    """The options as a Markdown table (the documentation's options page)."""
    rows = ["| option | flag | domain | default | resumable | meaning |",
            "|---|---|---|---|---|---|"]
    for opt in options:
        form = opt.flag or opt.flag_form
        cells = [f"`{opt.name}`", f"`{form}`" if form else "(Python only)",
                 opt.domain(), f"`{default_text(opt)}`", "yes" if opt.resumable else "",
                 opt.help + (f" ({opt.note})" if opt.note else "")]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)
