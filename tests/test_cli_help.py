"""The command line's help: every option of every subcommand says what it does, help shows the
defaults, and ``--version`` prints the package version."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import miniunlearn
from miniunlearn.cli import build_parser, main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of ``miniunlearn``, by name."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


SUBCOMMANDS = sorted(_subcommands())


def test_every_subcommand_is_walked() -> None:
    expected = {
        "fetch",
        "train",
        "forget",
        "submit",
        "serve",
        "evaluate",
        "bench",
        "ledger",
        "audit",
        "methods",
        "ids",
    }
    assert set(SUBCOMMANDS) == expected


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_option_of_every_subcommand_has_a_help_line(command: str) -> None:
    missing = [
        "/".join(action.option_strings) or action.dest
        for action in _subcommands()[command]._actions
        if not (action.help or "").strip() or action.help == argparse.SUPPRESS
    ]
    assert missing == [], f"{command}: options without help: {missing}"


def test_every_top_level_option_has_a_help_line() -> None:
    assert all((action.help or "").strip() for action in build_parser()._actions)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_shows_the_defaults_that_are_set(command: str) -> None:
    parser = _subcommands()[command]
    text = parser.format_help()
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert f"(default: {action.default})" in " ".join(text.split()), action.option_strings


def test_forget_help_shows_mini_as_the_default_method(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["forget", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    options = out.split("options:", 1)[1]  # past the usage line
    method_help = options.split("--method METHOD", 1)[1].split("--option", 1)[0]
    assert "(default: mini)" in method_help


def test_version_prints_the_package_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"miniunlearn {miniunlearn.__version__}\n"


def test_version_through_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "miniunlearn.cli", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"miniunlearn {miniunlearn.__version__}"
