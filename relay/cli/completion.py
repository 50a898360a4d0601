"""`axis-relay completion bash`: a bash completion script made from the parser itself, so
it never lags behind a new command or option (install.sh installs it)."""

from __future__ import annotations

import argparse

from relay.cli.parser import build_parser


def _words(parser: argparse.ArgumentParser) -> tuple[dict[str, argparse.ArgumentParser], list[str]]:
    commands: dict[str, argparse.ArgumentParser] = {}
    options: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            commands.update(action.choices)
        elif isinstance(action.choices, list | tuple) and not action.option_strings:
            options.extend(str(c) for c in action.choices)  # a positional with choices (spool list|retry)
        else:
            options.extend(action.option_strings)
    return commands, options


def bash_script() -> str:
    """One case per command path: its subcommands and options, completed as words; a
    --config or --dir completes file names."""
    cases: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        commands, options = _words(parser)
        words = " ".join([*commands, *options])
        cases.append(f'        "{path}") words="{words}" ;;')
        for name, sub in commands.items():
            walk(sub, f"{path} {name}".strip())

    walk(build_parser({}), "")
    body = "\n".join(cases)
    return f"""# bash completion for axis-relay (made by `axis-relay completion bash`)
_axis_relay() {{
    local cur prev path word words
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    case "$prev" in
        --config|--dir|--state) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    path=""
    for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        case "$word" in
            -*) ;;
            *) [ -n "$(_axis_relay_words "${{path:+$path }}$word")" ] && path="${{path:+$path }}$word" ;;
        esac
    done
    COMPREPLY=($(compgen -W "$(_axis_relay_words "$path")" -- "$cur"))
}}
_axis_relay_words() {{
    local words=""
    case "$1" in
{body}
    esac
    echo "$words"
}}
complete -F _axis_relay axis-relay
"""


def completion(args: argparse.Namespace) -> int:
    print(bash_script(), end="")
    return 0
