"""`axis-relay run` (the daemon, under systemd) and `axis-relay dev` (`make run`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Coroutine
from typing import Any

from relay.cli.errors import EXIT_FAILED, EXIT_STARTUP, CliError, load
from relay.config import RelayConfig
from relay.ops import logs
from relay.ops.systemd import Notifier
from relay.server import RelayError, RelayFailed, serve


def run(args: argparse.Namespace) -> int:
    config = load(args.config)
    logs.configure(args.log_format or config.log.format, config.log.level)
    return _until_stopped(_serve(config))


def dev(args: argparse.Namespace) -> int:
    from relay.dev import stack  # never imported by `run` (tests/test_layout.py)

    logs.configure("auto", "info")
    return _until_stopped(stack.run(args.state, args.port))


def _until_stopped(relay: Coroutine[Any, Any, None]) -> int:
    try:
        asyncio.run(relay)
    except RelayFailed as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    except RelayError as exc:
        raise CliError(str(exc), EXIT_STARTUP) from None
    except KeyboardInterrupt:
        pass
    return 0


async def _serve(config: RelayConfig) -> None:
    stop, reload = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    await serve(config, stop.wait, notifier=Notifier(os.environ), reload=reload)
