"""`axis-relay spool|clips|gaps|backfill`: the spool and the ledger, read or acted on
beside a running relay (never taking what it owns: quarantined clips move back into
queue/, which it picks up; a manual gap is a row it takes up on its next round)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime

from relay.backfill.gaps import Span
from relay.cli import render
from relay.cli.errors import CliError, load
from relay.config import RelayConfig
from relay.ledger import Ledger, LedgerError, LedgerUnusable
from relay.spool.store import SpoolStore


def spool(args: argparse.Namespace) -> int:
    config = load(args.config)
    store = SpoolStore(config.spool.dir)
    if args.action == "discard":
        return _discard(config, store, args.clip_ids, args.all)
    if args.action == "retry":
        return _retry(store, args.clip_ids)
    entries = list(store.entries())
    print(render.spool_table(entries) if entries else f"The spool {config.spool.dir} is empty: nothing waits.")
    return 0


def _retry(store: SpoolStore, clip_ids: list[str]) -> int:
    held = {c.clip_id for c in store.entries() if c.state == "quarantined"}
    if unknown := [c for c in clip_ids if c not in held]:
        raise CliError(f"no quarantined clip matches {', '.join(unknown)} (see 'axis-relay spool list')", 1)
    if not held:
        print("Nothing in quarantine: nothing to retry.")
        return 0
    moved = store.retry_quarantined(clip_ids)
    print(f"{len(moved)} clip(s) moved back to the queue; a running relay picks them up within seconds.")
    for clip_id in moved:
        print(f"  {clip_id}")
    return 0


def _discard(config: RelayConfig, store: SpoolStore, clip_ids: list[str], every: bool) -> int:
    """Delete quarantined clips for good: named ones, or --all; says what goes first."""
    if bool(clip_ids) == every:
        raise CliError("name the quarantined clips to discard, or pass --all (not both)")
    held = {c.clip_id: c for c in store.entries() if c.state == "quarantined"}
    if unknown := [c for c in clip_ids if c not in held]:
        raise CliError(f"not in quarantine: {', '.join(unknown)} (see 'axis-relay spool list')")
    for clip in [held[c] for c in clip_ids] if clip_ids else held.values():
        print(render.discarding(clip))
    removed = store.discard_quarantined(clip_ids)
    try:
        ledger = Ledger.open(config.ledger_path)
    except (OSError, LedgerError, LedgerUnusable):
        ledger = None  # no history to correct; the clips are gone all the same
    if ledger is not None:
        try:
            ledger.clips.discarded([c.clip_id for c in removed])
        finally:
            ledger.close()
    print(f"{len(removed)} quarantined clip(s) discarded; they will not be delivered.")
    return 0


def _known_camera(config: RelayConfig, camera: str | None) -> None:
    """A --camera that names no device is a mistake to say, not an empty listing."""
    if camera is not None and camera not in config.devices:
        known = ", ".join(sorted(config.devices)) or "none"
        raise CliError(f"--camera {camera!r}: no such device in [devices] (known: {known})")


def _since(text: str, option: str = "--since") -> datetime:
    try:
        return render.parse_since(text)
    except ValueError as exc:
        raise CliError(str(exc).replace("--since", option)) from None


def _from_ledger(config: RelayConfig, since_text: str, read: Callable[[Ledger, datetime], str]) -> int:
    """What `clips` and `gaps` share: --since, the ledger opened read-only, clear errors."""
    since = _since(since_text)
    try:
        ledger = Ledger.open_readonly(config.ledger_path)
    except FileNotFoundError:
        raise CliError(f"no ledger at {config.ledger_path} yet; the relay creates it when it starts", 1) from None
    try:
        text = read(ledger, since)
    except LedgerError as exc:
        raise CliError(f"cannot read the ledger {config.ledger_path}: {exc} (start the relay once)", 1) from None
    finally:
        ledger.close()
    print(text)
    return 0


def clips(args: argparse.Namespace) -> int:
    config = load(args.config)
    _known_camera(config, args.camera)

    def read(ledger: Ledger, since: datetime) -> str:
        records = ledger.clips.find(camera=args.camera, since=since)
        return render.clips_json(records) if args.json else render.clips_table(records)

    return _from_ledger(config, args.since, read)


def gaps(args: argparse.Namespace) -> int:
    config = load(args.config)
    _known_camera(config, args.camera)

    def read(ledger: Ledger, since: datetime) -> str:
        records = ledger.gaps.find(camera=args.camera, since=since)
        return render.gaps_json(records) if args.json else render.gaps_table(records)

    return _from_ledger(config, args.since, read)


def backfill(args: argparse.Namespace) -> int:
    """Ask the running relay to fetch a range: a gap of cause 'manual' in the ledger,
    which the relay's back-fill takes up on its next round, like any other."""
    from relay.cli.camera import camera_device

    config = load(args.config)
    camera = args.camera
    camera_device(config, camera)
    start, end = _since(args.start, "--from/--to"), _since(args.end, "--from/--to")
    if end <= start:
        raise CliError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    try:
        ledger = Ledger.open(config.ledger_path)
    except (OSError, LedgerError, LedgerUnusable) as exc:
        raise CliError(f"cannot open the ledger {config.ledger_path}: {exc}", 1) from None
    try:
        gap = ledger.gaps.add_manual(camera, Span(start, end), datetime.now(UTC))
    finally:
        ledger.close()
    print(
        f"gap {gap.gap_id}: {camera} {start.isoformat()} - {end.isoformat()} ({gap.seconds:.0f} s) "
        "queued for back-fill; "
        f"the running relay fetches it within backfill.scan_interval_s ({config.backfill.scan_interval_s:g} s). "
        f"Follow it with: axis-relay gaps --camera {camera}"
    )
    return 0
