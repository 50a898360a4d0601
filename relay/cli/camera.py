"""`axis-relay camera check|setup|remove`, given a validated config: each run_* returns
the text to print and the exit code (0 all well, 1 anything needs attention); a config
or command line that is wrong is a CliError (2). Nothing is sent to a camera before the
config and the arguments validate."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta

from relay.camera import check, setup
from relay.camera.answers import CameraFailure
from relay.camera.vapix import VapixClient
from relay.cli.errors import CliError, load
from relay.config import RelayConfig
from relay.ledger import Ledger, LedgerError
from relay.ops import logs


def camera(args: argparse.Namespace) -> int:
    config = load(args.config)
    logs.configure("auto", config.log.level)  # the config's level, still on stderr
    if args.camera_action == "check":
        text, code = asyncio.run(run_check(config, args.names, args.relay_url, args.json))
    elif args.camera_action == "remove":
        text, code = asyncio.run(run_remove(config, args.name))
    else:
        text, code = asyncio.run(run_setup(config, args.name, _setup_options(config, args), args.dry_run))
    print(text)
    return code


def _setup_options(config: RelayConfig, args: argparse.Namespace) -> setup.Options:
    url = relay_url(config, args.relay_url)
    if url is None:
        raise CliError("the relay's URL as cameras reach it is not known: set ingest.public_url or pass --relay-url")
    if not 1 <= args.interval <= 3600 or args.pre_ms < 0 or (args.post_ms or 0) < 0:
        raise CliError("--interval is 1-3600 s; --pre-ms and --post-ms are 0 or more")
    return setup.Options(
        relay_url=url,
        relay_id=config.site.relay_id,
        interval_s=args.interval,
        pre_ms=args.pre_ms,
        post_ms=args.post_ms,
        retention_hours=args.retention_hours,
        validate_server_cert=not args.no_validate_cert,
        wait_s=0.0 if args.no_wait else args.wait_s or 2 * args.interval + (args.post_ms or 0) / 1000 + 45,
    )


def camera_device(config: RelayConfig, name: str) -> None:
    """CliError unless ``name`` is a device with a camera section."""
    if name not in config.devices:
        raise CliError(f"no device {name!r} in [devices]; known: {', '.join(sorted(config.devices))}")
    if config.devices[name].camera is None:
        raise CliError(f"devices.{name} has no [devices.{name}.camera] section; add url, username and password")


def relay_url(config: RelayConfig, given: str | None) -> str | None:
    return (given or config.ingest.public_url or "").rstrip("/") or None


def upload_url(config: RelayConfig, name: str) -> str | None:
    """Where this relay's set-up points the device, when the config says (what tells an
    earlier version's unnamed set-up apart from the other relay's)."""
    base = relay_url(config, None)
    return f"{base}/upload/{name}" if base else None


async def run_check(config: RelayConfig, names: list[str], given_url: str | None, as_json: bool) -> tuple[str, int]:
    names = names or [n for n, d in config.devices.items() if d.camera is not None]
    if not names:
        raise CliError("no device has a [devices.<name>.camera] section to check")
    for name in names:
        camera_device(config, name)
    last_clips = {
        name: found for name in names if (found := await asyncio.to_thread(_last_clip, config, name)) is not None
    }
    reports = await check.check_all(
        config.devices, names, relay_url(config, given_url), last_clips, peers=config.site.peers
    )
    text = json.dumps([r.as_json() for r in reports], indent=1) if as_json else check.table(reports)
    return text, 0 if all(r.ok for r in reports) else 1


async def run_setup(config: RelayConfig, name: str, options: setup.Options, dry_run: bool) -> tuple[str, int]:
    camera_device(config, name)
    device = config.devices[name]
    camera = device.camera
    assert camera is not None
    try:
        plan = setup.plan(name, device, options)
    except setup.SetupError as exc:
        raise CliError(str(exc)) from None
    lines = [f"{name}: set-up {'(dry run: nothing is sent)' if dry_run else ''}".rstrip()]
    if dry_run:
        return "\n".join(lines + [f"  would: {line}" for line in setup.describe(plan)]), 0
    started = datetime.now(UTC)
    async with VapixClient.open(name, camera) as client:
        try:
            outcome = await setup.apply(client, plan, camera.disk)
        except setup.SetupFailed as exc:
            return f"{name}: {exc}", 1
        except CameraFailure as exc:
            return f"{name}: set-up failed: {exc}", 1
    lines += [f"  {line}" for line in outcome.lines]
    arrived = await first_clip(config, name, started, options.wait_s) if options.wait_s else None
    if device.filename_template != plan.filename_template:
        lines.append(
            f'  add to [devices.{name}] so clips are placed in time by name too: filename_template = "'
            f'{plan.filename_template}"'
        )
    report = await check.check(name, device, options.relay_url, peers=config.site.peers)
    lines.append(check.table([report]))
    ok = report.ok
    if options.wait_s:
        if arrived:
            lines.append(f"  end-to-end: the camera's first clip reached the relay: {arrived}")
        else:
            ok = False
            lines.append(
                f"  end-to-end: FAIL no clip from {name} reached the relay within {options.wait_s:g} s\n"
                f"       fix: check the camera reaches {plan.recipient['upload_url']} (firewall, routing), that "
                "it trusts the relay's certificate (install gen-cert's ca.crt, or --no-validate-cert), and that "
                "the relay runs (axis-relay status)"
            )
    return "\n".join(lines), 0 if ok else 1


async def first_clip(config: RelayConfig, name: str, since: datetime, wait_s: float) -> str | None:
    """The camera's first clip after ``since`` in the relay's ledger, waiting up to
    ``wait_s``: "file name (received at ...)", or None."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        found = await asyncio.to_thread(_received_since, config, name, since)
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.5)


def _received_since(config: RelayConfig, name: str, since: datetime) -> str | None:
    try:
        ledger = Ledger.open_readonly(config.ledger_path)
    except FileNotFoundError:
        return None
    try:
        rows = ledger.clips.find(camera=name, since=since)
    except LedgerError:
        return None
    finally:
        ledger.close()
    device = [r for r in rows if r.origin == "device"]
    return f"{device[0].filename} (received {device[0].received_at[:19]}Z)" if device else None


def _last_clip(config: RelayConfig, name: str) -> str | None:
    """The newest clip the device sent in the last week, as the ledger has it."""
    since = datetime.now(UTC) - timedelta(days=7)
    try:
        ledger = Ledger.open_readonly(config.ledger_path)
    except FileNotFoundError:
        return None
    try:
        rows = [r for r in ledger.clips.find(camera=name, since=since) if r.origin == "device"]
    except LedgerError:
        return None
    finally:
        ledger.close()
    return f"{rows[-1].filename} (received {rows[-1].received_at[:19]}Z)" if rows else None


async def run_remove(config: RelayConfig, name: str) -> tuple[str, int]:
    camera_device(config, name)
    camera = config.devices[name].camera
    assert camera is not None
    async with VapixClient.open(name, camera) as client:
        try:
            removed = await setup.remove(client, name, config.site.relay_id, upload_url(config, name))
        except CameraFailure as exc:
            return f"{name}: remove failed: {exc}", 1
    if not removed:
        return f"{name}: nothing of axis-relay's was on the camera", 0
    return f"{name}: removed {', '.join(removed)} (continuous recording and retention left as they are)", 0
