"""`axis-relay check-config|gen-cert|hash-secret|s3 check|apigw check|status`: is this
gateway's set-up right, and how is the running relay."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import urllib.error
import urllib.request

from relay.cli import render
from relay.cli.errors import EXIT_STARTUP, CliError, load
from relay.ingest.connections import fd_budget
from relay.ingest.secret_hash import hash_secret
from relay.ops.site_check import site_problems
from relay.server import startup_problems


def check_config(args: argparse.Namespace) -> int:
    path = args.file or args.config
    config = load(path)
    if problems := site_problems(config) + startup_problems(config):
        raise CliError("\n".join([f"configuration error in {path}:", *problems]))
    if config.destination == "apigw" and config.apigw:
        target = config.apigw.url
    else:
        target = f"bucket {config.s3.bucket}" if config.s3 else "?"
    print(f"{path}: OK ({len(config.devices)} device(s), to {target})")
    # Under the unit (ExecStartPre) this is the relay's own descriptor limit.
    print(fd_budget(config.ingest.max_connections, config.upload_workers).explain())
    return 0


def gen_cert(args: argparse.Namespace) -> int:
    from relay.ops import certs

    ca_was_there = (args.dir / "ca.crt").exists()
    try:
        paths = certs.generate(args.dir, args.names, new_ca=args.new_ca)
    except (certs.CertError, ValueError) as exc:
        raise CliError(str(exc), 1) from None
    if args.new_ca and ca_was_there:
        print(
            "axis-relay: --new-ca replaced the CA: cameras that validate the relay's certificate refuse it "
            "until they are given the new ca.crt",
            file=sys.stderr,
        )
    fingerprint = certs.ca_fingerprint(args.dir)
    print(render.certificate(paths, args.names, fingerprint, ca_was_there=ca_was_there and not args.new_ca))
    return 0


def hash_secret_command(_: argparse.Namespace) -> int:
    # From stdin or a prompt, never from argv, where ps and shell history would see it.
    secret = getpass.getpass("secret: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if not secret:
        raise CliError("an empty secret cannot be hashed")
    print(hash_secret(secret))
    return 0


def destination_check(args: argparse.Namespace) -> int:
    """`axis-relay s3 check` and `axis-relay apigw check`: exit 0 when all is well."""
    config = load(args.config)
    if args.command == "s3":
        from relay.upload import s3_check

        report = asyncio.run(s3_check.check(config, args.prefix))
        verdict = "OK: the bucket and the credentials do what the relay needs"
    else:
        from relay.upload import apigw_check

        report = asyncio.run(apigw_check.check(config))
        verdict = "OK: delivery through API Gateway verified"
    print("\n".join(report.lines))
    print(verdict if report.verified else "NOT VERIFIED")
    return 0 if report.verified else 1


def status(args: argparse.Namespace) -> int:
    """The relay's health level, its reasons and its figures; exit 0 ok, 1 degraded,
    2 failing, 3 when the relay does not answer (relay.ops.health says what each means)."""
    config = load(args.config)
    url = f"http://{config.metrics.host}:{config.metrics.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            report = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        report = json.loads(exc.read())
    except (OSError, ValueError) as exc:
        raise CliError(f"no answer from {url} ({exc}); is the relay running?", EXIT_STARTUP) from None
    print(render.health(report))
    return {"ok": 0, "degraded": 1}.get(str(report.get("status")), 2)
