"""Every option of both command lines (`bpe`, `playground`) says what it does in --help.

Found as a newcomer (issue 22): `bpe train --help` listed --min-frequency, --name, --workers and
the corpus arguments with no text. The test walks the real argparse parsers, subcommands
included, so an option added later without help fails here.
"""
from __future__ import annotations

import argparse

import pytest

from llm_playground.bpe.cli import build_parser as bpe_parser
from llm_playground.playground.cli import build_parser as playground_parser


def undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """`command option` for every action of `parser` (and its subparsers) without help text."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.metavar or action.dest
        if isinstance(action, argparse._SubParsersAction):
            described = {a.dest for a in action._choices_actions if a.help}
            missing += [f"{path} {cmd} (the subcommand)" for cmd in action.choices
                        if cmd not in described]
            for cmd, sub in action.choices.items():
                missing += undocumented(sub, f"{path} {cmd}")
        elif not action.help or action.help == argparse.SUPPRESS or not action.help.strip():
            missing.append(f"{path} {name}")
    return missing


@pytest.mark.parametrize("make,prog", [(bpe_parser, "bpe"), (playground_parser, "playground")])
def test_every_option_has_help(make, prog):
    assert undocumented(make(), prog) == []


def test_the_walker_finds_an_undocumented_option():
    parser = bpe_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices["train"].add_argument("--undocumented", type=int)
    assert undocumented(parser, "bpe") == ["bpe train --undocumented"]
