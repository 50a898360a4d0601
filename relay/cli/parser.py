"""The command line: one parser, one --config every command that reads the config shares."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from relay.ops.version import VERSION

DEFAULT_CONFIG = Path("/etc/axis-relay/relay.toml")
CONFIG_ENV = "AXIS_RELAY_CONFIG"


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


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
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
    spool.add_argument(
        "action",
        choices=["list", "retry", "discard"],
        help="list what waits and what is quarantined; retry or discard quarantined clips",
    )
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
    coverage = sub.add_parser(
        "coverage", help="is every second of each camera in S3? exit 0 only when complete", parents=[config]
    )
    coverage.add_argument("--camera", help="only this device")
    coverage.add_argument("--day", help="one UTC day, YYYY-MM-DD (default: the last 24 h)")
    coverage.add_argument("--from", dest="start", help="start: a time, or a duration ago (2h)")
    coverage.add_argument("--to", dest="end", help="end: a time, or a duration ago (default: now)")
    coverage.add_argument(
        "--source",
        choices=["s3", "ledger", "both"],
        default="s3",
        help="read the bucket (default), the ledger, or both and show where they disagree",
    )
    coverage.add_argument("--json", action="store_true", help="a JSON array, one entry per camera, for scripts")
    completion = sub.add_parser("completion", help="print a shell completion script (install.sh installs it)")
    completion.add_argument("shell", choices=["bash"], help="the shell (bash)")
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
