"""``mixgrpo config``: the configuration reference, generated from the typed models.

Walks ``mixgrpo.config.Config`` (every section and field: type with its
constraints, default, one-line docstring) and the options model of every reward
channel kind, so the reference cannot drift from the code. ``--markdown`` prints
the README's table (``make config-docs`` writes it between the README's
``config-reference`` markers; a test checks they match).
"""

from __future__ import annotations

import argparse
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mixgrpo.config import Config
from mixgrpo.errors import InputError
from mixgrpo.rewards.channels import all_kinds

NAME = "config"
HELP = "print every config field and channel option with its type, default and meaning"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
CHANNEL = "<name>"
"""How a reward channel's place in a path is written: ``rewards.<name>.weight``, as ``--set`` addresses it."""


@dataclass(frozen=True)
class FieldDoc:
    """One row of the reference."""

    path: str
    """Dotted path as ``--set`` writes it (``learner.lora.rank``, ``rewards.<name>.options.pattern``)."""
    type: str
    """Type with its constraints (``int, >= 1``), YAML spelling (``null``)."""
    default: str
    """Default as YAML/JSON, ``required`` or ``section``."""
    doc: str
    """The field's one-line docstring."""


@dataclass(frozen=True)
class Group:
    """A table: one config section, or the options of one channel kind."""

    title: str
    doc: str
    fields: list[FieldDoc]


def type_label(annotation: Any) -> str:
    """``str | null``, ``"na" | "an"``, ``list[float]``, ``dict[str, any]`` for a field annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin is typing.Literal:
        return " | ".join(json.dumps(value) for value in args)
    if origin is typing.Annotated:  # a union member with bounds of its own: int, >= 1
        base, *extras = args
        items = [item for extra in extras for item in (extra.metadata if isinstance(extra, FieldInfo) else [extra])]
        return ", ".join([type_label(base), *_bounds(items)])
    if origin in (typing.Union, types.UnionType):
        labels = [type_label(arg) for arg in args if arg is not type(None)]
        return " | ".join(labels + (["null"] if type(None) in args else []))
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_label(arg) for arg in args)}]"
    return getattr(annotation, "__name__", str(annotation))


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "min length", "pattern": "matches"}


def constraints(info: FieldInfo) -> list[str]:
    """The field's bounds as text (``>= 1``, ``< 1``, ``min length 1``)."""
    return _bounds(info.metadata)


def _bounds(metadata: list[Any]) -> list[str]:
    found = []
    for item in metadata:
        for attribute, label in _BOUNDS.items():
            value = getattr(item, attribute, None)
            if value is not None:
                found.append(f"{label} {value}")
    return found


def default_label(info: FieldInfo) -> str:
    """The default as it would be written in YAML (JSON spelling), or ``required``."""
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "section"
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def _section_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds, and whether it holds a list of them (``rewards``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if typing.get_origin(annotation) is list:
        [item] = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item, True
    return None, False


def walk(model: type[BaseModel], prefix: str = "") -> Iterator[FieldDoc]:
    """Every field of ``model`` in declaration order, nested sections flattened into dotted paths."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested, is_list = _section_model(info.annotation)
        doc = " ".join((info.description or "").split())
        if nested is None:
            label = ", ".join([type_label(info.annotation), *constraints(info)])
            yield FieldDoc(path, label, default_label(info), doc)
        elif is_list:
            yield FieldDoc(path, f"list[{nested.__name__}]", default_label(info), doc)
            yield from walk(nested, f"{path}.{CHANNEL}.")
        else:
            yield FieldDoc(path, "section", "", doc)
            yield from walk(nested, f"{path}.")


def reference() -> list[Group]:
    """One group per top-level config section, then one per channel kind's options."""
    rows, groups = list(walk(Config)), []
    for name, info in Config.model_fields.items():
        fields = [row for row in rows
                  if row.path.startswith(f"{name}.") or (row.path == name and row.type != "section")]
        groups.append(Group(f"`{name}`", info.description or "", fields))
    for kind in all_kinds():
        summary = " ".join((kind.factory.__doc__ or "").split("\n\n")[0].split()).replace("``", "`")
        rows = list(walk(kind.options, f"rewards.{CHANNEL}.options."))
        groups.append(Group(f"`rewards.{CHANNEL}.options` for `kind: {kind.name}`", summary, rows))
    return groups


def _code(text: str) -> str:
    """A code span in a table cell (types and defaults keep ``<name>`` and quotes as written)."""
    return f"`{text}`".replace("|", "\\|")


def _cell(text: str) -> str:
    """Table-cell text: pipes escaped, ``<uri>`` kept visible (a bare ``<...>`` is an HTML tag in Markdown)."""
    return text.replace("|", "\\|").replace("<", "&lt;")


def markdown(groups: list[Group]) -> str:
    """The reference as Markdown tables (the README's configuration reference)."""
    lines = ["<!-- generated by `mixgrpo config --markdown` (make config-docs); edit the docstrings, not this -->"]
    for group in groups:
        lines += ["", f"#### {group.title}", ""]
        if group.doc:
            lines += [_cell(group.doc), ""]
        lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
        if not group.fields:
            lines.append("| (no options) | | | |")
        for row in group.fields:
            default = _code(row.default) if row.default not in ("", "required") else row.default
            lines.append(f"| `{row.path}` | {_code(row.type)} | {default} | {_cell(row.doc)} |")
    return "\n".join(lines) + "\n"


def text(groups: list[Group]) -> str:
    """The reference for a terminal: per group, one line per field and its docstring under it."""
    lines = []
    for group in groups:
        lines += [f"{group.title.replace('`', '')}: {group.doc}".rstrip(": ")]
        for row in group.fields:
            default = f" = {row.default}" if row.default else ""
            lines += [f"  {row.path}  ({row.type}){default}", f"      {row.doc}"]
        lines.append("")
    return "\n".join(lines)


def readme_section(readme: str) -> str:
    """What the README holds between its config-reference markers (InputError without them)."""
    found = re.search(re.escape(START) + r"\n(.*?)" + re.escape(END), readme, re.DOTALL)
    if found is None:
        raise InputError(f"README has no {START} ... {END} markers")
    return found.group(1)


def write_readme(path: Path, generated: str) -> bool:
    """Replace the README's reference with ``generated``; True when it changed."""
    readme = path.read_text()
    current = readme_section(readme)
    if current == generated:
        return False
    path.write_text(readme.replace(f"{START}\n{current}{END}", f"{START}\n{generated}{END}", 1))
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """config's options."""
    parser.add_argument("--markdown", action="store_true", help="print the README's Markdown tables instead")
    parser.add_argument("--write-readme", type=Path, default=None, metavar="README",
                        help="write the Markdown tables between README's config-reference markers")


def run(args: argparse.Namespace) -> int:
    """Print (or write into the README) the configuration reference."""
    groups = reference()
    if args.write_readme is not None:
        changed = write_readme(args.write_readme, markdown(groups))
        print(f"{args.write_readme}: configuration reference {'updated' if changed else 'already up to date'}")
    else:
        print(markdown(groups) if args.markdown else text(groups), end="")
    return 0
