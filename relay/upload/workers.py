"""A bounded pool of workers that takes queued clips, oldest first, to the destination.

What happens to a clip a worker holds, in every case:

- delivered: the destination confirmed it; it leaves the spool.
- a transient failure (network, 5xx, throttling, anything ``classify`` does not know):
  retried without limit, exponential backoff with full jitter and a cap.
- the destination refuses the relay itself (a wrong key or secret, a missing bucket or
  permission: ``DestinationRefused``): not the clip's fault, so the clip goes back to the
  queue and every worker pauses; the destination is tried again after ``retry.max_s``,
  or at once on SIGHUP (``DeliveryPause.wake``), and health says "failing" meanwhile.
- a permanent failure of the clip (``classify``): the clip goes to quarantine with the
  reason and the fix, and its open multipart upload, if any, is aborted.
- an exception the upload code did not expect (a bug, or a spool disk failing with EIO
  around the upload): logged with its traceback and counted
  (``axis_relay_upload_worker_errors``); the clip is given back to the queue and waits
  ``retry.max_s`` before any worker takes it again. The worker lives on: one bad clip
  or a passing disk error never stops the others, and never loses a clip.
- shutdown: workers stop taking clips as soon as it begins; an upload still running
  when the workers are cancelled stays queued and resumes at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Protocol

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from relay.backoff import Backoff
from relay.config import RetryConfig
from relay.ops.stats import Refusal, RelayStats
from relay.spool.clip import ClipMeta
from relay.spool.spool import Spool
from relay.upload.delivery import Delivered
from relay.upload.failures import DestinationRefused, PermanentUploadError, classify, describe, error_code

log = structlog.get_logger("relay.uploader")


class Destination(Protocol):
    # False when no S3 credentials were found where the destination needs them.
    has_credentials: bool

    async def deliver(self, meta: ClipMeta) -> Delivered: ...

    async def abandon(self, meta: ClipMeta) -> None: ...


class Pairing(Protocol):
    """The other relay of a pair, as upload needs it (relay.pair.Pair)."""

    def secondary(self, meta: ClipMeta) -> bool: ...

    def stale(self, meta: ClipMeta) -> bool: ...

    def hold_back_s(self, meta: ClipMeta) -> float: ...

    async def stored_by_peer(self, meta: ClipMeta) -> str | None: ...

    def delivered_by_peer(self, meta: ClipMeta) -> None: ...


class DeliveryPause:
    """Holds every worker while the destination refuses the relay, until ``retry_s`` has
    passed or ``wake()`` (SIGHUP) is called; then the workers try again."""

    def __init__(self, retry_s: float, stats: RelayStats) -> None:
        self._retry_s = retry_s
        self._stats = stats
        self._open = asyncio.Event()
        self._open.set()
        self._timer: asyncio.TimerHandle | None = None

    def refused(self, verdict: DestinationRefused) -> None:
        now = time.time()
        code = verdict.detail.get("code", "")
        current = self._stats.destination_refusal
        since = current.since if current is not None and current.code == code else now
        self._stats.destination_refusal = Refusal(code, verdict.reason, verdict.detail.get("fix", ""), since)
        if current is None or current.code != code:
            log.error(
                "delivery_paused",
                reason=verdict.reason,
                code=code,
                fix=verdict.detail.get("fix", ""),
                retry_in_s=self._retry_s,
            )
        else:
            log.debug("delivery_still_refused", code=code, retry_in_s=self._retry_s)
        self._open.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._retry_s, self._open.set)

    def wake(self) -> None:
        """Try the destination again now (the operator fixed something, and said so)."""
        if not self._open.is_set():
            log.info("delivery_retry_now", why="reload requested")
        self._open.set()

    def delivered(self) -> None:
        if self._stats.destination_refusal is not None:
            log.info("delivery_resumed", paused_s=round(time.time() - self._stats.destination_refusal.since, 1))
            self._stats.destination_refusal = None

    async def wait(self) -> None:
        await self._open.wait()


class Uploader:
    def __init__(
        self,
        spool: Spool,
        destination: Destination,
        retry: RetryConfig,
        stats: RelayStats,
        workers: int,
        pair: Pairing | None = None,
    ) -> None:
        self._pair = pair
        self._spool = spool
        self._destination = destination
        self._retry = retry
        self._backoff = Backoff(retry.initial_s, retry.max_s, jitter=True)
        self._stats = stats
        self._workers = workers
        self.pause = DeliveryPause(retry.max_s, stats)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for n in range(self._workers):
                group.create_task(self._work(), name=f"upload-worker-{n}")

    async def _work(self) -> None:
        while True:
            await self.pause.wait()
            if (clip_id := await self._spool.claim()) is None:
                return
            try:
                with structlog.contextvars.bound_contextvars(clip_id=clip_id):
                    await self._upload(clip_id)
            except Exception:
                log.exception("upload_worker_error", clip_id=clip_id, retry_in_s=self._retry.max_s)
                self._stats.upload_worker_errors += 1
                self._spool.release(clip_id, after_s=self._retry.max_s)

    async def _upload(self, clip_id: str) -> None:
        store = self._spool.store
        try:
            # The metadata and the attempts before this start (counted over restarts:
            # "attempt 40" after a night's outage, not "attempt 1" again), in one hop.
            meta, before = await asyncio.to_thread(lambda: (store.meta(clip_id), store.attempts(clip_id)))
        except FileNotFoundError:
            await self._spool.vanished(clip_id)
            return
        except (OSError, ValueError, TypeError) as exc:
            await self._quarantine(clip_id, f"metadata is unreadable: {exc}", {})
            return
        if self._pair is not None and (wait := self._pair.hold_back_s(meta)) > 0:
            # The peer uploads this camera first: look for its copy once it has had time.
            self._spool.release(clip_id, after_s=wait)
            return
        started = time.monotonic()
        attempts = before
        try:
            async for attempt in AsyncRetrying(
                # tenacity sees BaseException too: a cancelled upload (shutdown) must
                # end here, not be "retried" forever.
                retry=retry_if_exception(lambda e: isinstance(e, Exception) and classify(e) is None),
                wait=self._backoff.tenacity_wait,
                before_sleep=functools.partial(self._log_retry, clip_id, before),
                reraise=True,
            ):
                with attempt:
                    attempts = before + attempt.retry_state.attempt_number
                    delivered = await self._deliver(meta)
        except Exception as exc:
            verdict = classify(exc) or PermanentUploadError(str(exc))
            if isinstance(verdict, DestinationRefused):
                self._failed(verdict.reason)
                # Not this clip's fault: it waits in the queue, whole, for the fix.
                self._spool.release(clip_id)
                self.pause.refused(verdict)
                return
            with contextlib.suppress(Exception):  # best effort: the clip matters, not the parts
                await self._destination.abandon(meta)
            await self._quarantine(clip_id, verdict.reason, {**verdict.detail, "attempts": str(attempts)})
            return
        if delivered.route == "peer":
            await self._by_peer(clip_id, meta, delivered)
            return
        # Counted and logged as soon as the destination confirmed, before the spool lets
        # the clip go: a crash during the removal must not make a delivered clip look
        # lost (the next start finds its directory in trash/ and finishes the removal).
        if not delivered.already_present:
            self._stats.last_stored_at[meta.camera] = time.time()
        self._stats.clips_uploaded += 1
        self._stats.bytes_uploaded += meta.size
        self._stats.uploads_by_route[delivered.route] += 1
        self._stats.last_upload_at = time.time()
        self._stats.upload_failing_since = None
        self.pause.delivered()
        self._stats.observe_upload(time.monotonic() - started)
        # The key only where it is known (an API Gateway function may not say).
        where = {"key": delivered.key} if delivered.key is not None else {"key_decided_by": "the endpoint"}
        log.info(
            "clip_uploaded",
            camera=meta.camera,
            **where,
            bytes=meta.size,
            attempts=attempts,
            seconds=round(time.monotonic() - started, 3),
            already_present=delivered.already_present,
            route=delivered.route,
        )
        await self._spool.delivered(clip_id, key=delivered.key, route=delivered.route)

    async def _deliver(self, meta: ClipMeta) -> Delivered:
        """The secondary of a pair first looks for the peer's copy (same bytes) in S3, and
        either relay does for a clip that waited long (relay.pair.Pair.stored_by_peer);
        only when there is none does it upload (and the conditional commit settles a
        race with a peer uploading the same clip just then)."""
        if self._pair is not None and (self._pair.secondary(meta) or self._pair.stale(meta)):
            key = await self._pair.stored_by_peer(meta)
            if key is not None:
                return Delivered(key, already_present=True, route="peer")
        return await self._destination.deliver(meta)

    async def _by_peer(self, clip_id: str, meta: ClipMeta, delivered: Delivered) -> None:
        assert self._pair is not None
        self._pair.delivered_by_peer(meta)
        # The queue moved and the clip is in S3 (its bytes checked there): for health,
        # that is delivery, though this relay's uplink carried none of it.
        self._stats.last_upload_at = time.time()
        self._stats.upload_failing_since = None
        self.pause.delivered()
        log.info("clip_delivered_by_peer", camera=meta.camera, key=delivered.key, bytes=meta.size)
        await self._spool.delivered(clip_id, key=delivered.key, route=delivered.route)

    def _failed(self, error: str) -> None:
        if self._stats.upload_failing_since is None:
            self._stats.upload_failing_since = time.time()
        self._stats.last_upload_error = error[:300]

    def _log_retry(self, clip_id: str, before: int, state: RetryCallState) -> None:
        attempt = before + state.attempt_number
        with contextlib.suppress(OSError):  # a few bytes in the page cache; only the log's number
            self._spool.store.note_attempts(clip_id, attempt)
        exc = state.outcome.exception() if state.outcome else None
        reason = error_code(exc) if exc else "unknown"
        self._failed(f"{reason}: {describe(exc)}" if exc else reason)
        self._stats.upload_retries += 1
        self._stats.retries_by_reason[reason] += 1
        log.warning(
            "upload_retry",
            attempt=attempt,
            reason=reason,
            error=describe(exc)[:300] if exc else "",
            wait_s=round(state.upcoming_sleep, 2),
        )

    async def _quarantine(self, clip_id: str, reason: str, detail: dict[str, str]) -> None:
        await self._spool.quarantine(clip_id, reason, detail)
        self._stats.clips_quarantined += 1
