"""The command line's shape: every command has a handler in the one table, every option
says what it does, --config everywhere shows its default and honours AXIS_RELAY_CONFIG."""

from __future__ import annotations

import argparse
import subprocess

from relay.cli import COMMANDS
from relay.cli.completion import bash_script
from relay.cli.parser import build_parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
    return found


def every_parser(parser: argparse.ArgumentParser, path: str = "axis-relay") -> dict[str, argparse.ArgumentParser]:
    found = {path: parser}
    for name, sub in subcommands(parser).items():
        found |= every_parser(sub, f"{path} {name}")
    return found


def test_every_command_has_a_handler_and_every_option_its_help() -> None:
    parser = build_parser({})
    assert set(subcommands(parser)) == set(COMMANDS)
    missing = [
        f"{path}: {action.dest}"
        for path, sub in every_parser(parser).items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


def test_config_is_one_option_with_its_default_in_the_help() -> None:
    parsers = every_parser(build_parser({"AXIS_RELAY_CONFIG": "/srv/site/relay.toml"}))
    reading = [
        (path, action)
        for path, sub in parsers.items()
        for action in sub._actions
        if action.dest == "config" and action.option_strings
    ]
    # Every command that reads the config takes --config; those that do not are these.
    without = {p for p, sub in parsers.items() if not subcommands(sub)} - {p for p, _ in reading}
    assert without == {"axis-relay dev", "axis-relay gen-cert", "axis-relay hash-secret", "axis-relay completion"}
    for path, action in reading:
        assert str(action.default) == "/srv/site/relay.toml", path
        assert "default: /srv/site/relay.toml" in (action.help or ""), path


def test_status_prints_sizes_for_people() -> None:
    from relay.cli.render import health

    text = health({"status": "ok", "reasons": [], "queued_bytes": 7_512_345, "queued_clips": 3})
    assert "queued bytes             7.5 MB" in text
    assert "queued clips             3" in text


def test_bash_completes_commands_subcommands_and_options() -> None:
    script = bash_script()

    def complete(*words: str) -> list[str]:
        line = " ".join(["axis-relay", *words])
        probe = (
            f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words)}; _axis_relay; printf "%s\\n" "${{COMPREPLY[@]}}"'
        )
        result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return sorted(result.stdout.split())

    assert complete("sp") == ["spool"]
    assert complete("camera", "se") == ["setup"]
    assert complete("clips", "--c") == ["--camera", "--config"]
    assert complete("spool", "re") == ["retry"]
    assert complete("camera", "setup", "cam-1", "--no-") == ["--no-validate-cert", "--no-wait"]
