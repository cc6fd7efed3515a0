"""The one dataclass -> command-line mechanism: `transformers.HfArgumentParser`, with the toolkit's conventions.

    parser = DataclassParser((RunArguments, PruneConfig), description=__doc__)
    values = vars(parser.parse_args(argv))        # a bad flag or value: one line `prog: error: ...`, exit 2
    run_args, config = parser.parse_dict(values)  # each dataclass checks itself in __post_init__ (ValueError)

Each dataclass field is one flag, documented by the field: HfArgumentParser reads its type, default and
metadata ("help", "aliases": other spellings, "choices", "metavar"; a class attribute `_argument_group_name`
makes the dataclass's flags a group in --help). `DataclassParser` adds:
- "help" or "choices" given as a function (e.g. the names of a registry) is called when the parser is
  built, so a name registered before then is a choice;
- "flag": the flag's spelling when it is not --<field name> (the field name stays the destination);
- a tuple field (tuple[float, float, float]) takes that many values, parsed to a tuple;
- a bool field is a switch, as in the Wanda CLI: default False -> --<name> sets True; default True ->
  --no_<name> sets False (its help describes --no_<name>); HfArgumentParser's `--<name> [true|false]`
  form is not used;
- --help shows each flag's default (the field's) after its help, unless it is None, a switch's, or the
  help already says it.
Like HfArgumentParser, a flag spelled with "_" is also accepted with "-" (--sparsity-type).

`OneLineHfArgumentParser` is HfArgumentParser with the one-line errors only (the fine-tuning CLIs, whose
flags include the Trainer's, keep HfArgumentParser's conventions). Importing this module imports
transformers (about a second, no torch); `lib.core.cli` stays light.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from types import MappingProxyType
from typing import Any, get_args, get_origin

from transformers import HfArgumentParser

from lib.core.cli import OneLineErrors

BUILT_WHEN_PARSED = ("help", "choices")  # metadata that may be a function, called when the parser is built


def flag(default: Any, help: str, **metadata: Any) -> dataclasses.Field:
    """A dataclass field that is one documented flag: `field(default=default, metadata={"help": help, ...})`."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


class OneLineHfArgumentParser(OneLineErrors, HfArgumentParser):
    """HfArgumentParser whose errors are one line (`prog: error: ...`, exit 2), without the usage block."""


def shown_default(default: Any) -> str | None:
    """How --help writes a field's default: tuples and lists as their items joined by spaces; None: not shown."""
    if default is None or default is dataclasses.MISSING:
        return None
    return " ".join(map(str, default)) if isinstance(default, (tuple, list)) else str(default)


def _with_default(help_text: str, default: Any) -> str:
    """`help_text` (% escaped for argparse) + " (default: ...)" unless the default is not shown or the help says it."""
    shown = shown_default(default)
    help_text = help_text.replace("%", "%%")
    if shown is None or isinstance(default, bool) or "default" in help_text:
        return help_text
    return f"{help_text} (default: {shown})".strip()


def _field_default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def _hyphenated(flag: str) -> list[str]:
    """[flag] and, as HfArgumentParser adds them, its spelling with "-" for "_" after the leading dashes."""
    hyphens = "--" + flag[2:].replace("_", "-")
    return [flag] if hyphens == flag else [flag, hyphens]


def _resolved(field: dataclasses.Field) -> tuple[dataclasses.Field, dict[str, Any]]:
    """A copy of `field` whose metadata has its functions called and the help ending in the default, and that
    metadata as a dict (for the switch and tuple fields added here)."""
    meta = {key: value() if key in BUILT_WHEN_PARSED and callable(value) else value
            for key, value in field.metadata.items()}
    meta["help"] = _with_default(meta.get("help", ""), _field_default(field))
    resolved = copy.copy(field)
    resolved.metadata = MappingProxyType(meta)
    return resolved, meta


class _StoreTuple(argparse.Action):
    """Store the values of an nargs=N flag as a tuple (the field's type), not argparse's list."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, tuple(values))


class DataclassParser(OneLineHfArgumentParser):
    """HfArgumentParser with the conventions in the module docstring; its description is printed as written."""

    def __init__(self, dataclass_types, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(dataclass_types, **kwargs)

    @staticmethod
    def _parse_dataclass_field(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
        field, meta = _resolved(field)
        flag = meta.pop("flag", f"--{field.name}")
        aliases = meta.pop("aliases", ())
        aliases = [aliases] if isinstance(aliases, str) else list(aliases)
        default = _field_default(field)
        if field.type is bool:
            if default:
                parser.add_argument(*_hyphenated(f"--no_{field.name}"), *aliases, action="store_false", dest=field.name,
                                    default=True, help=meta.get("help"))
            else:
                parser.add_argument(*_hyphenated(flag), *aliases, action="store_true", dest=field.name, default=False,
                                    help=meta.get("help"))
        elif get_origin(field.type) is tuple:
            item_types = get_args(field.type)
            if len(set(item_types)) != 1 or Ellipsis in item_types:
                raise TypeError(f"{field.name}: a tuple field needs one item type and a fixed length, got {field.type}")
            parser.add_argument(*_hyphenated(flag), *aliases, dest=field.name, default=default, nargs=len(item_types),
                                type=item_types[0], action=_StoreTuple, **meta)
        else:
            if flag != f"--{field.name}":  # HfArgumentParser spells the flag from the name; the dest stays the field's
                meta["dest"] = field.name
                field.name = flag[2:]
            meta["aliases"] = aliases
            field.metadata = MappingProxyType(meta)
            HfArgumentParser._parse_dataclass_field(parser, field)
