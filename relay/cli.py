"""``axis-relay``: a thin shell that parses arguments and calls into the package."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import signal
import sqlite3
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from relay.backfill.gapbook import GapBook
from relay.backfill.gaps import Span
from relay.config import ConfigError, RelayConfig, load_config
from relay.ingest.connections import fd_budget
from relay.ingest.secret_hash import hash_secret
from relay.ops import listings, logs
from relay.ops.site_check import site_problems
from relay.ops.systemd import Notifier
from relay.ops.units import human_bytes
from relay.ops.version import VERSION
from relay.server import RelayError, serve, startup_problems
from relay.spool.ledger import Ledger, LedgerUnusable
from relay.spool.store import SpoolStore

DEFAULT_CONFIG = Path("/etc/axis-relay/relay.toml")
CONFIG_ENV = "AXIS_RELAY_CONFIG"

EXIT_CONFIG = 2  # the config file is wrong: the message says which field and how to fix it
EXIT_STARTUP = 3  # valid config, but the relay cannot run with it (port taken, no credentials, ...)


def _config_option(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The one --config every command that reads the config shares."""
    default = Path(environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config",
        type=Path,
        default=default,
        help=f"the relay's config file (default: {default}; {CONFIG_ENV} sets another default)",
    )
    return parent


def _parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="axis-relay", description="Relay AXIS camera clips to Amazon S3.")
    parser.add_argument("--version", action="version", version=f"axis-relay {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    config = _config_option(os.environ if environ is None else environ)
    run = sub.add_parser("run", help="run the relay", parents=[config])
    run.add_argument(
        "--log-format", choices=["auto", "json", "console", "journal"], help="overrides log.format in the config"
    )
    check = sub.add_parser("check-config", help="validate a config file and exit", parents=[config])
    check.add_argument("file", type=Path, nargs="?", help="the file to check (same as --config)")
    dev = sub.add_parser("dev", help="run the relay with an embedded S3 server (make run)")
    dev.add_argument("--state", type=Path, default=Path(".dev"), help="where its files go (default: .dev)")
    dev.add_argument("--port", type=int, default=8443, help="the port devices send to (default 8443, else a free one)")
    cert = sub.add_parser("gen-cert", help="make a local CA and a server certificate for this gateway")
    cert.add_argument("names", nargs="+", help="host names and IP addresses devices use to reach the relay")
    cert.add_argument(
        "--dir",
        type=Path,
        default=Path("/etc/axis-relay/tls"),
        help="where the files go (default: /etc/axis-relay/tls)",
    )
    cert.add_argument(
        "--new-ca",
        action="store_true",
        help="replace the CA too: every camera that validates the relay must then be given the new ca.crt",
    )
    sub.add_parser("hash-secret", help="hash a device token or password for the config (reads it from stdin)")
    sub.add_parser(
        "status",
        help="ask the running relay how it is (its /healthz); exit 0 ok, 1 degraded, 2 failing, 3 no answer",
        parents=[config],
    )
    spool = sub.add_parser("spool", help="inspect or act on the spool", parents=[config])
    spool.add_argument("action", choices=["list", "retry", "discard"])
    spool.add_argument("clip_ids", nargs="*", help="with retry or discard: only these quarantined clips")
    spool.add_argument("--all", action="store_true", help="with discard: every quarantined clip")
    s3 = sub.add_parser("s3", help="check the S3 bucket and credentials", parents=[config])
    s3.add_argument("action", choices=["check"], help="try each call the relay makes, on a probe object")
    s3.add_argument("--prefix", default="axis-relay-check/", help="where the probe objects go in the bucket")
    apigw = sub.add_parser("apigw", help="check the API Gateway path", parents=[config])
    apigw.add_argument("action", choices=["check"], help="send one test clip through apigw.url and look for it")
    clips = sub.add_parser(
        "clips", help="list the clips the relay received and where they went (the ledger)", parents=[config]
    )
    clips.add_argument("--camera", help="only this device")
    clips.add_argument(
        "--since", default="24h", help="a duration (30m, 2h, 7d) or a time (local unless it has an offset); default 24h"
    )
    clips.add_argument("--json", action="store_true", help="a JSON array, for scripts")
    gaps = sub.add_parser(
        "gaps", help="list the gaps found in cameras' footage and what became of them", parents=[config]
    )
    gaps.add_argument("--camera", help="only this device")
    gaps.add_argument("--since", default="24h", help="gaps that end after this: a duration or a time; default 24h")
    gaps.add_argument("--json", action="store_true", help="a JSON array, for scripts")
    backfill = sub.add_parser("backfill", help="fetch a range of a camera's footage from its SD card", parents=[config])
    backfill.add_argument("--camera", required=True, help="the device, as named in [devices]")
    backfill.add_argument("--from", dest="start", required=True, help="start: a time, or a duration ago (2h)")
    backfill.add_argument("--to", dest="end", required=True, help="end: a time, or a duration ago (0s = now)")
    _camera_parser(sub.add_parser("camera", help="check, set up or remove what the relay needs on a camera"), config)
    return parser


def _camera_parser(camera: argparse.ArgumentParser, config: argparse.ArgumentParser) -> None:
    actions = camera.add_subparsers(dest="camera_action", required=True)
    check = actions.add_parser(
        "check", help="check cameras (nothing is changed); exit 1 if any needs attention", parents=[config]
    )
    check.add_argument("names", nargs="*", help="devices to check (default: every one with a camera section)")
    check.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    setup = actions.add_parser(
        "setup", help="set a camera up to send its clips here and record to its card", parents=[config]
    )
    setup.add_argument("name", help="the device, as named in [devices]")
    setup.add_argument("--interval", type=int, default=15, help="seconds between clips (default 15)")
    setup.add_argument("--pre-ms", type=int, default=0, help="pre-buffer, ms (default 0)")
    setup.add_argument("--post-ms", type=int, help="post-buffer, ms (default: the interval)")
    setup.add_argument("--retention-hours", type=int, default=48, help="the card keeps at least this (default 48)")
    setup.add_argument("--no-validate-cert", action="store_true", help="the camera does not check the relay's TLS")
    setup.add_argument("--dry-run", action="store_true", help="print what would be sent (secrets masked)")
    setup.add_argument(
        "--wait-s",
        type=float,
        help="wait this long for the first clip to reach the relay (default: 2 intervals + 45 s)",
    )
    setup.add_argument("--no-wait", action="store_true", help="do not wait for the first clip")
    remove = actions.add_parser("remove", help="remove what 'camera setup' created, and nothing else", parents=[config])
    remove.add_argument("name", help="the device, as named in [devices]")
    for parser in (check, setup, remove):
        parser.add_argument("--relay-url", help="how cameras reach the relay (default: ingest.public_url)")


def _load(path: Path) -> RelayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"axis-relay: configuration error in {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


async def _run(config: RelayConfig) -> None:
    stop, reload = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    await serve(config, stop.wait, notifier=Notifier(os.environ), reload=reload)


def _spool_command(config: RelayConfig, action: str, clip_ids: list[str], every: bool) -> int:
    store = SpoolStore(config.spool.dir)
    if action == "discard":
        return _discard(config, store, clip_ids, every)
    if action == "retry":
        held = {c.clip_id for c in store.entries() if c.state == "quarantined"}
        if unknown := [c for c in clip_ids if c not in held]:
            print(
                f"axis-relay: no quarantined clip matches {', '.join(unknown)} (see 'axis-relay spool list')",
                file=sys.stderr,
            )
            return 1
        if not held:
            print("Nothing in quarantine: nothing to retry.")
            return 0
        moved = store.retry_quarantined(clip_ids)
        print(f"{len(moved)} clip(s) moved back to the queue; a running relay picks them up within seconds.")
        for clip_id in moved:
            print(f"  {clip_id}")
        return 0
    entries = list(store.entries())
    print(listings.spool_table(entries) if entries else f"The spool {config.spool.dir} is empty: nothing waits.")
    return 0


def _discard(config: RelayConfig, store: SpoolStore, clip_ids: list[str], every: bool) -> int:
    """Delete quarantined clips for good: named ones, or --all; says what goes first."""
    if bool(clip_ids) == every:
        print("axis-relay: name the quarantined clips to discard, or pass --all (not both)", file=sys.stderr)
        return EXIT_CONFIG
    held = {c.clip_id: c for c in store.entries() if c.state == "quarantined"}
    if unknown := [c for c in clip_ids if c not in held]:
        print(f"axis-relay: not in quarantine: {', '.join(unknown)} (see 'axis-relay spool list')", file=sys.stderr)
        return EXIT_CONFIG
    for clip in [held[c] for c in clip_ids] if clip_ids else held.values():
        camera = clip.meta.camera if clip.meta else "?"
        size = clip.meta.size if clip.meta else 0
        print(f"discarding {clip.clip_id}  {camera}  {size} bytes  ({clip.reason.get('reason', 'no reason recorded')})")
    removed = store.discard_quarantined(clip_ids)
    try:
        ledger = Ledger.open(config.ledger_path)
    except (OSError, sqlite3.Error, LedgerUnusable):
        ledger = None  # no history to correct; the clips are gone all the same
    if ledger is not None:
        try:
            ledger.discarded([c.clip_id for c in removed])
        finally:
            ledger.close()
    print(f"{len(removed)} quarantined clip(s) discarded; they will not be delivered.")
    return 0


def _from_ledger(config: RelayConfig, since_text: str, read: Callable[[Ledger, datetime], str]) -> int:
    """What `clips` and `gaps` share: --since, the ledger opened read-only, clear errors."""
    try:
        since = listings.parse_since(since_text)
    except ValueError as exc:
        print(f"axis-relay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        ledger = Ledger.open_readonly(config.ledger_path)
    except FileNotFoundError:
        print(
            f"axis-relay: no ledger at {config.ledger_path} yet; the relay creates it when it starts", file=sys.stderr
        )
        return 1
    try:
        text = read(ledger, since)
    except sqlite3.Error as exc:
        print(f"axis-relay: cannot read the ledger {config.ledger_path}: {exc} (start the relay once)", file=sys.stderr)
        return 1
    finally:
        ledger.close()
    print(text)
    return 0


def _known_camera(config: RelayConfig, camera: str | None) -> bool:
    """A --camera that names no device is a mistake to say, not an empty listing."""
    if camera is None or camera in config.devices:
        return True
    known = ", ".join(sorted(config.devices)) or "none"
    print(f"axis-relay: --camera {camera!r}: no such device in [devices] (known: {known})", file=sys.stderr)
    return False


def _clips(config: RelayConfig, camera: str | None, since_text: str, as_json: bool) -> int:
    if not _known_camera(config, camera):
        return EXIT_CONFIG

    def read(ledger: Ledger, since: datetime) -> str:
        records = ledger.clips(camera=camera, since=since)
        return listings.clips_json(records) if as_json else listings.clips_table(records)

    return _from_ledger(config, since_text, read)


def _gaps(config: RelayConfig, camera: str | None, since_text: str, as_json: bool) -> int:
    if not _known_camera(config, camera):
        return EXIT_CONFIG

    def read(ledger: Ledger, since: datetime) -> str:
        records = GapBook(ledger).gaps(camera=camera, since=since)
        return listings.gaps_json(records) if as_json else listings.gaps_table(records)

    return _from_ledger(config, since_text, read)


def _backfill(config: RelayConfig, camera: str, start_text: str, end_text: str) -> int:
    """Ask the running relay to fetch a range: a gap of cause 'manual' in the ledger,
    which the relay's back-fill takes up on its next round, like any other."""
    from relay.camera import commands

    try:
        commands.camera_device(config, camera)
    except commands.CommandError as exc:
        print(f"axis-relay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        start, end = listings.parse_since(start_text), listings.parse_since(end_text)
    except ValueError as exc:
        print(f"axis-relay: {str(exc).replace('--since', '--from/--to')}", file=sys.stderr)
        return EXIT_CONFIG
    if end <= start:
        print(f"axis-relay: --to ({end.isoformat()}) must be after --from ({start.isoformat()})", file=sys.stderr)
        return EXIT_CONFIG
    try:
        ledger = Ledger.open(config.ledger_path)
    except (OSError, sqlite3.Error, LedgerUnusable) as exc:
        print(f"axis-relay: cannot open the ledger {config.ledger_path}: {exc}", file=sys.stderr)
        return 1
    try:
        gap = GapBook(ledger).add_manual(camera, Span(start, end), datetime.now(UTC))
    finally:
        ledger.close()
    print(
        f"gap {gap.gap_id}: {camera} {start.isoformat()} - {end.isoformat()} ({gap.seconds:.0f} s) "
        "queued for back-fill; "
        f"the running relay fetches it within backfill.scan_interval_s ({config.backfill.scan_interval_s:g} s). "
        f"Follow it with: axis-relay gaps --camera {camera}"
    )
    return 0


def _camera(args: argparse.Namespace) -> int:
    from relay.camera import commands, setup

    config = _load(args.config)
    logs.configure("auto", config.log.level)  # the config's level, still on stderr
    try:
        if args.camera_action == "check":
            text, code = asyncio.run(commands.run_check(config, args.names, args.relay_url, args.json))
        elif args.camera_action == "remove":
            text, code = asyncio.run(commands.run_remove(config, args.name))
        else:
            url = commands.relay_url(config, args.relay_url)
            if url is None:
                raise commands.CommandError(
                    "the relay's URL as cameras reach it is not known: set ingest.public_url or pass --relay-url"
                )
            if not 1 <= args.interval <= 3600 or args.pre_ms < 0 or (args.post_ms or 0) < 0:
                raise commands.CommandError("--interval is 1-3600 s; --pre-ms and --post-ms are 0 or more")
            options = setup.Options(
                relay_url=url,
                interval_s=args.interval,
                pre_ms=args.pre_ms,
                post_ms=args.post_ms,
                retention_hours=args.retention_hours,
                validate_server_cert=not args.no_validate_cert,
                wait_s=0.0 if args.no_wait else args.wait_s or 2 * args.interval + (args.post_ms or 0) / 1000 + 45,
            )
            text, code = asyncio.run(commands.run_setup(config, args.name, options, args.dry_run))
    except commands.CommandError as exc:
        print(f"axis-relay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(text)
    return code


def _status(config: RelayConfig) -> int:
    """Print the relay's health level, its reasons and its figures; exit 0 ok, 1 degraded,
    2 failing, 3 when the relay does not answer (relay.ops.health says what each means)."""
    url = f"http://{config.metrics.host}:{config.metrics.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            report = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        report = json.loads(exc.read())
    except (OSError, ValueError) as exc:
        print(f"axis-relay: no answer from {url} ({exc}); is the relay running?", file=sys.stderr)
        return EXIT_STARTUP
    level = str(report.get("status", "failing"))
    print(f"{'health':<24} {level.upper()}")
    for reason in report.get("reasons", []):
        where = f" [{reason['camera']}]" if reason.get("camera") else ""
        print(f"  {reason['level']:<9} {reason['code']}{where}: {reason['message']}")
        print(f"  {'':<9} fix: {reason['fix']}")
    for key, value in report.items():
        if key not in ("status", "reasons", "healthy", "problems"):
            shown = human_bytes(value) if key.endswith("_bytes") else value
            print(f"{key.replace('_', ' '):<24} {'-' if value is None else shown}")
    return {"ok": 0, "degraded": 1}.get(level, 2)


def _check(args: argparse.Namespace) -> int:
    """`axis-relay s3 check` and `axis-relay apigw check`: exit 0 when all is well."""
    config = _load(args.config)
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


# The commands that write the relay's state: the spool, the ledger, `make run`'s files.
WRITES_STATE = frozenset({"run", "dev", "spool", "backfill"})


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command not in ("run", "dev"):
        # First, before anything can log: to stderr, so that stdout holds only what the
        # command prints (one JSON document with --json). structlog unconfigured would
        # print to stdout.
        logs.configure("auto", "info")
    if args.command in WRITES_STATE:
        # Clips and the ledger are for the relay's user alone, with or without systemd's UMask.
        os.umask(0o077)
    if args.command == "check-config":
        args.config = args.file or args.config
        config = _load(args.config)
        if problems := site_problems(config) + startup_problems(config):
            print(f"axis-relay: configuration error in {args.config}:", *problems, sep="\n", file=sys.stderr)
            raise SystemExit(EXIT_CONFIG)
        if config.destination == "apigw" and config.apigw:
            target = config.apigw.url
        else:
            target = f"bucket {config.s3.bucket}" if config.s3 else "?"
        print(f"{args.config}: OK ({len(config.devices)} device(s), to {target})")
        # Under the unit (ExecStartPre) this is the relay's own descriptor limit.
        print(fd_budget(config.ingest.max_connections, config.upload_workers).explain())
        return
    if args.command == "gen-cert":
        from relay.ops import certs

        ca_was_there = (args.dir / "ca.crt").exists()
        try:
            paths = certs.generate(args.dir, args.names, new_ca=args.new_ca)
        except (certs.CertError, ValueError) as exc:
            print(f"axis-relay: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        if args.new_ca and ca_was_there:
            print(
                "axis-relay: --new-ca replaced the CA: cameras that validate the relay's certificate refuse it "
                "until they are given the new ca.crt",
                file=sys.stderr,
            )
        print(certs.instructions(paths, args.names, ca_was_there=ca_was_there and not args.new_ca))
        return
    if args.command == "hash-secret":
        # From stdin or a prompt, never from argv, where ps and shell history would see it.
        secret = getpass.getpass("secret: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not secret:
            print("axis-relay: an empty secret cannot be hashed", file=sys.stderr)
            raise SystemExit(EXIT_CONFIG)
        print(hash_secret(secret))
        return
    if args.command == "status":
        raise SystemExit(_status(_load(args.config)))
    if args.command == "spool":
        raise SystemExit(_spool_command(_load(args.config), args.action, args.clip_ids, args.all))
    if args.command in ("apigw", "s3"):
        raise SystemExit(_check(args))
    if args.command == "clips":
        raise SystemExit(_clips(_load(args.config), args.camera, args.since, args.json))
    if args.command == "gaps":
        raise SystemExit(_gaps(_load(args.config), args.camera, args.since, args.json))
    if args.command == "camera":
        raise SystemExit(_camera(args))
    if args.command == "backfill":
        raise SystemExit(_backfill(_load(args.config), args.camera, args.start, args.end))
    try:
        if args.command == "dev":
            from relay.dev import stack as devstack

            logs.configure("auto", "info")
            asyncio.run(devstack.run(args.state, args.port))
        else:
            config = _load(args.config)
            logs.configure(args.log_format or config.log.format, config.log.level)
            asyncio.run(_run(config))
    except RelayError as exc:
        print(f"axis-relay: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_STARTUP) from None
    except KeyboardInterrupt:
        pass
