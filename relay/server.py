"""``serve()``: the relay's lifetime, from spool recovery to the summary line.

Start-up: open the ledger, recover the spool (and tell the ledger what it holds), open
the destination (S3, or API Gateway), start upload workers, listen.
Shutdown, in order: upload workers take no new clips; stop listening; let devices that
are mid-upload finish (bounded by ingest.shutdown_grace_s); then, each resource closed
in reverse order of opening by one exit stack: the listener (aiohttp's own grace is
short, the drain is done), the upload workers (a clip still uploading stays queued and
resumes at the next start), the destination's clients, the ledger (after writing what
was noted). One summary line last.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web

from relay import _compat
from relay.backfill.filler import Backfill
from relay.config import IngestConfig, MetricsConfig, RelayConfig
from relay.coverage.audit import Audit
from relay.coverage.seed import needs_seeding, seed_history
from relay.ingest.connections import ConnectionGuard, GuardedSite, fd_budget
from relay.ingest.endpoint import Ingest
from relay.ingest.handshakes import HandshakeWatch, camera_addresses
from relay.ingest.tls import TlsError, bound_tls_read_buffers, cert_not_after, tls_context
from relay.ledger import LedgerWriter
from relay.ops.health import HealthRules
from relay.ops.metrics import Observed, metrics_app
from relay.ops.stats import RelayStats
from relay.ops.systemd import Notifier, keep_informed
from relay.ops.version import VERSION
from relay.pair import Pair
from relay.spool import lock as spool_lock
from relay.spool.spool import Spool
from relay.spool.store import SpoolStore
from relay.spool.writer import WriteThreads
from relay.tasks import TaskOwner, cancel_and_wait
from relay.upload.apigw import ApiGatewayDestination
from relay.upload.s3 import S3Destination
from relay.upload.workers import Destination, Uploader

log = structlog.get_logger("relay.server")

# How often the spool is checked for clips an operator put back with 'spool retry'.
REQUEUE_SCAN_S = 10.0
# aiohttp's own wait for handlers at cleanup. Short: the relay has already waited for
# devices mid-upload (ingest.shutdown_grace_s), and the two waits must not add up to
# the unit's TimeoutStopSec.
LISTENER_CLEANUP_S = 1.0


@dataclass(frozen=True)
class Listening:
    """Where the relay listens, as bound: a configured port 0 shows the real one."""

    ingest: list[str]
    metrics: list[str]


class RelayError(Exception):
    """The relay cannot run as configured, or a part of it failed; the message says what to fix."""


class RelayFailed(RelayError):
    """The relay ran, and a part of it ended that never should (the CLI exits 1)."""


def startup_problems(config: RelayConfig) -> list[str]:
    """What would stop the relay at start that the config's own validation cannot see:
    a certificate and key that do not load as a pair, a spool directory it cannot
    write. `axis-relay check-config` reports them (ExecStartPre), before a restart loop."""
    problems = []
    cert, key = config.ingest.tls_cert, config.ingest.tls_key
    if cert and key:
        try:
            tls_context(cert, key)
        except TlsError as exc:
            problems.append(str(exc))
    existing = config.spool.dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problems.append(f"spool.dir: {config.spool.dir} cannot be created: {existing} is not a directory")
    elif not os.access(existing, os.W_OK | os.X_OK):
        problems.append(f"spool.dir: {config.spool.dir} cannot be created or written ({existing} is not writable)")
    return problems


async def _on_reload(
    requests: asyncio.Event, uploader: Uploader, stats: RelayStats, tls: tuple[ssl.SSLContext, Path, Path] | None
) -> None:
    """SIGHUP: try a refusing destination again now, and load a renewed certificate into
    the live context (new handshakes use it, devices mid-upload keep theirs)."""
    while True:
        await requests.wait()
        requests.clear()
        uploader.pause.wake()
        if tls is None:
            continue
        context, cert, key = tls
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            log.error("tls_reload_failed", error=str(exc), kept="the certificate already loaded")
        else:
            stats.cert_not_after = cert_not_after(cert)
            log.info("tls_reloaded", cert=str(cert))


async def _listen(
    ingest: Ingest, config: IngestConfig, context: ssl.SSLContext | None, guard: ConnectionGuard
) -> web.AppRunner:
    runner = web.AppRunner(
        ingest.app(),
        shutdown_timeout=LISTENER_CLEANUP_S,
        access_log=None,  # one structured event per clip instead
        handler_cancellation=False,
        max_line_size=config.max_header_bytes,
        max_field_size=config.max_header_bytes,
        max_headers=64,
        # An idle keep-alive connection is closed as soon as a silent body would be.
        keepalive_timeout=config.idle_timeout_s,
    )
    await runner.setup()
    site = GuardedSite(runner, config.host, config.port, guard, ssl_context=context, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise RelayError(f"ingest.host/port: cannot listen on {config.host}:{config.port}: {exc.strerror}") from None
    return runner


@contextlib.asynccontextmanager
async def _metrics_listener(config: MetricsConfig, seen: Observed) -> AsyncIterator[list[str]]:
    runner = web.AppRunner(metrics_app(seen), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port, reuse_address=True).start()
    except OSError as exc:
        await runner.cleanup()
        raise RelayError(f"metrics.host/port: cannot listen on {config.host}:{config.port}: {exc.strerror}") from None
    try:
        yield [_url(a, tls=False) for a in runner.addresses]
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _destination(config: RelayConfig, spool: SpoolStore) -> AsyncIterator[Destination]:
    if config.destination == "apigw":
        async with ApiGatewayDestination.open(config, spool) as through_gateway:
            yield through_gateway
    else:
        assert config.s3 is not None  # checked by the config
        async with S3Destination.open(config.s3, spool) as direct:
            yield direct


async def _rescan(spool: Spool, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            adopted = await spool.adopt()
        except OSError as exc:
            # Out of file descriptors, a disk hiccup: passes; the next scan tries again.
            log.warning("spool_rescan_failed", error=str(exc), retry_in_s=interval_s)
            continue
        if adopted:
            log.info("spool_requeued_adopted", count=adopted)


async def serve(
    config: RelayConfig,
    shutdown_trigger: Callable[[], Awaitable[object]],
    *,
    on_started: Callable[[Listening], None] | None = None,
    requeue_scan_s: float = REQUEUE_SCAN_S,
    stats: RelayStats | None = None,
    notifier: Notifier | None = None,
    reload: asyncio.Event | None = None,
) -> RelayStats:
    """Run the relay until ``shutdown_trigger()`` returns; returns what it counted
    (into ``stats`` when given, so a caller can watch the counts while it runs).
    ``reload`` is set on SIGHUP: a refusing destination is tried again at once, and a
    renewed TLS certificate is loaded."""
    stats = stats if stats is not None else RelayStats()
    notifier = notifier or Notifier({})
    try:
        _compat.check()  # every private name the relay reaches for is still there
    except _compat.CompatError as exc:
        raise RelayError(str(exc)) from None
    bound_tls_read_buffers()

    async with contextlib.AsyncExitStack() as stack:
        # First of all: a second relay must not touch a spool (or a ledger) in use.
        try:
            stack.enter_context(spool_lock.holding(config.spool.dir))
        except spool_lock.SpoolBusy as exc:
            raise RelayError(str(exc)) from None
        except OSError as exc:
            raise RelayError(f"spool.dir: cannot use {config.spool.dir}: {exc.strerror}") from None
        ledger = await stack.enter_async_context(LedgerWriter.open(config.ledger_path, config.ledger.retention_days))
        writes = await stack.enter_async_context(WriteThreads.running())
        spool = Spool(config.spool, ledger, writes)
        try:
            await spool.recover()
            await ledger.reconcile(await asyncio.to_thread(lambda: list(spool.store.entries())))
        except OSError as exc:
            raise RelayError(f"spool.dir: cannot use {config.spool.dir}: {exc.strerror}") from None

        destination = await stack.enter_async_context(_destination(config, spool.store))
        if not destination.has_credentials:
            raise RelayError(
                "s3: no AWS credentials found; set s3.access_key_id/secret_access_key, "
                "AXIS_RELAY_S3_ACCESS_KEY_ID/AXIS_RELAY_S3_SECRET_ACCESS_KEY, or the standard AWS chain"
            )
        pair = None
        if config.site.paired:
            assert isinstance(destination, S3Destination)  # a pair is an S3 site (the config checks)
            pair = await stack.enter_async_context(Pair.open(config, stats, spool, ledger, destination.stored_by_peer))
        uploader = Uploader(spool, destination, config.retry, stats, config.upload_workers, pair)
        # Every long-lived task has this one owner: one that ends on its own ends the relay.
        tasks = await stack.enter_async_context(TaskOwner.owning())
        tasks.start("uploader", uploader.run())
        tasks.start("requeue-scan", _rescan(spool, requeue_scan_s))
        if pair is not None:
            tasks.start("pair", pair.run())
        if config.backfill.enabled:
            backfill = Backfill(config.backfill, config.devices, spool, ledger, stats, pair)
            # Asked before ingest opens: a new gateway's empty ledger learns from S3 what the
            # bucket already holds, before back-fill's first round (relay.coverage.seed).
            history = seed_history(config, ledger) if await needs_seeding(config, ledger) else None
            tasks.start("backfill", backfill.run(history), may_return=True)
        if config.audit.enabled and config.destination == "s3":
            tasks.start("coverage-audit", Audit(config, ledger, stats).run())

        watch = HandshakeWatch(stats, await camera_addresses(config.devices))
        budget = fd_budget(config.ingest.max_connections, config.upload_workers)
        guard = ConnectionGuard(budget.cap, config.ingest.head_timeout_s, watch)
        await stack.enter_async_context(guard.sweeping())
        ingest = Ingest(config.ingest, config.devices, spool, stats, guard)
        metrics: list[str] = []
        if config.metrics.enabled:
            seen = Observed(
                stats,
                spool,
                guard,
                HealthRules.of(config),
                ledger,
                sorted(config.devices),
                destination=_destination_name(config),
            )
            metrics = await stack.enter_async_context(_metrics_listener(config.metrics, seen))
        cert, key = config.ingest.tls_cert, config.ingest.tls_key
        chacha20 = config.ingest.tls_prefer_chacha20
        try:
            context = tls_context(cert, key, prefer_chacha20=chacha20) if cert and key else None
        except TlsError as exc:
            raise RelayError(str(exc)) from None
        if cert:
            stats.cert_not_after = cert_not_after(cert)
        if reload:
            live = (context, cert, key) if context and cert and key else None
            tasks.start("reload", _on_reload(reload, uploader, stats, live))
        runner = await _listen(ingest, config.ingest, context, guard)
        stack.push_async_callback(runner.cleanup)
        listening = Listening([_url(a, tls=context is not None) for a in runner.addresses], metrics)
        log.info(
            "relay_started",
            version=VERSION,
            destination=_destination_name(config),
            relay_id=config.site.relay_id,
            peers=config.site.peers,
            max_connections=budget.cap,
            listen=listening.ingest,
            metrics=listening.metrics,
            queued=spool.queued_clips,
            queued_bytes=spool.queued_bytes,
        )
        # READY only now: the spool is recovered and devices can connect.
        notifier.send(ready="1", status=status_line(spool, stats))
        if notifier.enabled:
            # WATCHDOG=1 only while the upload workers live (their task ending also ends
            # the relay, below; the pings stop first, whatever else still runs).
            tasks.start(
                "systemd", keep_informed(notifier, lambda: tasks.alive("uploader"), lambda: status_line(spool, stats))
            )
        if on_started:
            on_started(listening)

        await _until_shutdown_or_failure(shutdown_trigger, tasks)
        tasks.stopping()
        spool.close()  # upload workers finish what they hold and take nothing new
        log.info("relay_stopping", uploads_in_flight=len(spool.uploading))
        notifier.send(stopping="1", status="stopping: letting devices finish their uploads")
        for site in list(runner.sites):
            await site.stop()  # no new connections
        cut_off = await ingest.drain(config.ingest.shutdown_grace_s)
        if cut_off:
            log.warning("device_uploads_cut_off", count=cut_off, grace_s=config.ingest.shutdown_grace_s)
        # Read before the exit stack cancels the workers: these clips stay queued.
        left_queued, interrupted, evicted = spool.queued_clips, len(spool.uploading), spool.evicted_clips
    log.info(
        "relay_stopped",
        uptime_s=round(time.time() - stats.started_at, 1),
        left_queued=left_queued,
        uploads_interrupted=interrupted,
        clips_evicted=evicted,
        **stats.summary(),
    )
    return stats


async def _until_shutdown_or_failure(shutdown_trigger: Callable[[], Awaitable[object]], tasks: TaskOwner) -> None:
    """Wait for the trigger; a long-lived task that ends first is a bug, and ends the
    relay with RelayFailed (exit 1; under systemd it restarts, and start-up recovers the
    spool) rather than leaving a relay that accepts clips it will never upload."""
    trigger = asyncio.ensure_future(shutdown_trigger())
    failure = asyncio.ensure_future(tasks.failed())
    try:
        await asyncio.wait([trigger, failure], return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait([trigger, failure])
    if failure.done() and not failure.cancelled():
        raise RelayFailed(failure.result())


def _destination_name(config: RelayConfig) -> str:
    if config.destination == "apigw" and config.apigw is not None:
        return config.apigw.url
    return f"s3://{config.s3.bucket}" if config.s3 is not None else ""


def status_line(spool: Spool, stats: RelayStats) -> str:
    """What `systemctl status axis-relay` shows."""
    last = "never" if stats.last_upload_at is None else f"{time.time() - stats.last_upload_at:.0f} s ago"
    return (
        f"{spool.queued_clips} clip(s) queued ({spool.queued_bytes / 1e6:.1f} MB), "
        f"{stats.clips_uploaded} uploaded, {stats.clips_quarantined} quarantined, last upload {last}"
    )


def _url(address: object, *, tls: bool) -> str:
    host, port = address[:2] if isinstance(address, tuple) else (str(address), 0)
    scheme = "https" if tls else "http"
    host = f"[{host}]" if ":" in str(host) else host
    return f"{scheme}://{host}:{port}"
