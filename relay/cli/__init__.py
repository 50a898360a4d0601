"""``axis-relay``: a thin shell over the package. One parser (``parser``), one table from
command to handler, one exit path: a handler returns the exit code, or raises CliError
with the message and the code, which ``main`` prints. The packages return data; the
handlers render it (``render``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from relay.cli import camera, completion, coverage, run, site, spool
from relay.cli.errors import CliError
from relay.cli.parser import build_parser
from relay.ops import logs

Handler = Callable[[argparse.Namespace], int]

COMMANDS: dict[str, Handler] = {
    "run": run.run,
    "dev": run.dev,
    "check-config": site.check_config,
    "gen-cert": site.gen_cert,
    "hash-secret": site.hash_secret_command,
    "status": site.status,
    "s3": site.destination_check,
    "apigw": site.destination_check,
    "spool": spool.spool,
    "clips": spool.clips,
    "gaps": spool.gaps,
    "backfill": spool.backfill,
    "coverage": coverage.coverage,
    "camera": camera.camera,
    "completion": completion.completion,
}

# The commands that write the relay's state: the spool, the ledger, `make run`'s files.
WRITES_STATE = frozenset({"run", "dev", "spool", "backfill"})


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command not in ("run", "dev"):
        # First, before anything can log: to stderr, so that stdout holds only what the
        # command prints (one JSON document with --json). structlog unconfigured would
        # print to stdout.
        logs.configure("auto", "info")
    if args.command in WRITES_STATE:
        # Clips and the ledger are for the relay's user alone, with or without systemd's UMask.
        os.umask(0o077)
    try:
        code = COMMANDS[args.command](args)
    except CliError as exc:
        print(f"axis-relay: {exc}", file=sys.stderr)
        code = exc.code
    raise SystemExit(code)
