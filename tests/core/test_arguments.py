"""lib/core/arguments.py: HfArgumentParser with the toolkit's conventions (switches, tuples, "flag", registries
read when the parser is built, defaults in --help, one-line errors)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lib.core.arguments import DataclassParser, OneLineHfArgumentParser

REGISTRY = ["a", "b"]


@dataclass
class Example:
    name: str = field(default="a", metadata={"choices": lambda: tuple(REGISTRY), "aliases": ("--old_name",),
                                             "help": lambda: f"one of {', '.join(REGISTRY)}"})
    shares: tuple[float, float, float] = field(default=(0.5, 0.25, 0.25), metadata={
        "flag": "--share_list", "metavar": ("X", "Y", "Z"), "help": "three shares"})
    count: int | None = field(default=None, metadata={"help": "a count (default: all)"})
    rate: float = field(default=0.1, metadata={"help": "100% is 1"})
    fast: bool = field(default=False, metadata={"help": "go fast"})
    check: bool = field(default=True, metadata={"help": "do not check"})

    def __post_init__(self) -> None:
        if self.count is not None and self.count < 1:
            raise ValueError(f"--count must be at least 1, got {self.count}")


def parse(argv: list[str], parser: DataclassParser | None = None) -> Example:
    parser = parser or DataclassParser(Example, prog="prog")
    (example,) = parser.parse_dict(vars(parser.parse_args(argv)))
    return example


def test_defaults_spellings_and_types():
    assert parse([]) == Example()
    example = parse(["--old_name", "b", "--share_list", "0.2", "0.3", "0.5", "--count", "3", "--fast", "--no_check"])
    assert example == Example("b", (0.2, 0.3, 0.5), 3, 0.1, True, False)
    assert parse(["--share-list", "1", "0", "0", "--no-check", "--rate", "0.5"]) == Example(shares=(1.0, 0.0, 0.0),
                                                                                          rate=0.5, check=False)
    parser = DataclassParser(Example, prog="prog")
    assert "--shares" not in parser._option_string_actions and "--check" not in parser._option_string_actions
    assert parser._option_string_actions["--share_list"].dest == "shares"
    assert (parser._option_string_actions["--fast"].nargs, parser._option_string_actions["--no_check"].nargs) == (0, 0)


def test_registry_names_are_read_when_the_parser_is_built():
    REGISTRY.append("c")
    try:
        parser = DataclassParser(Example, prog="prog")
        assert parse(["--name", "c"], parser).name == "c"
        assert "one of a, b, c" in " ".join(parser.format_help().split())
    finally:
        REGISTRY.remove("c")


def test_help_shows_the_fields_defaults():
    text = " ".join(DataclassParser(Example, prog="prog").format_help().split())
    assert "--share_list X Y Z, --share-list X Y Z three shares (default: 0.5 0.25 0.25)" in text
    assert "--name {a,b}, --name {a,b}" not in text and "--old_name {a,b}" in text
    assert "one of a, b (default: a)" in text and "100% is 1 (default: 0.1)" in text
    assert "a count (default: all)" in text and "(default: None)" not in text
    assert "go fast --no_check" in text and "(default: False)" not in text and "(default: True)" not in text


@pytest.mark.parametrize("argv, message", [
    (["--name", "z"], "prog: error: argument --name/--old_name: invalid choice: 'z' (choose from "),
    (["--fast", "yes"], "prog: error: unrecognized arguments: yes"),
    (["--share_list", "1", "2"], "prog: error: argument --share_list/--share-list: expected 3 arguments"),
    (["--count", "x"], "prog: error: argument --count: invalid int value: 'x'"),
])
def test_parse_errors_are_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_value_errors_come_from_post_init():
    with pytest.raises(ValueError, match="^--count must be at least 1, got 0$"):
        parse(["--count", "0"])


@dataclass
class Plain:
    count: int = 1
    fast: bool = False


def test_one_line_hf_parser_keeps_hf_conventions(capsys):
    parser = OneLineHfArgumentParser(Plain, prog="prog")
    assert parser.parse_dict(vars(parser.parse_args(["--fast", "false", "--count", "2"]))) == (Plain(2, False),)
    with pytest.raises(SystemExit):
        parser.parse_args(["--count", "x"])
    assert capsys.readouterr().err == "prog: error: argument --count: invalid int value: 'x'\n"
