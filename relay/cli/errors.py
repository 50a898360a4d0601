"""How a command fails: one exception, one message, one exit code (main prints it)."""

from __future__ import annotations

from pathlib import Path

from relay.config import ConfigError, RelayConfig, load_config

EXIT_FAILED = 1  # the relay ran and a part of it ended that never should (relay_task_ended says which)
EXIT_CONFIG = 2  # the config file or the command line is wrong: the message says which and how to fix it
EXIT_STARTUP = 3  # valid config, but the relay cannot run with it (port taken, spool in use, ...)


class CliError(Exception):
    """The command cannot do what was asked; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_CONFIG) -> None:
        super().__init__(message)
        self.code = code


def load(path: Path) -> RelayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(f"configuration error in {exc}") from None
