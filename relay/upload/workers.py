"""A bounded pool of workers that takes queued clips, oldest first, to the destination.

Transient failures are retried without limit (exponential backoff, full jitter, a
cap); permanent ones send the clip to quarantine. A clip leaves the queue only after
the destination confirmed it. Cancelling a worker (shutdown) leaves its clip queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from relay.config import RetryConfig
from relay.ops.stats import RelayStats
from relay.spool.clip import ClipMeta
from relay.spool.store import Spool
from relay.upload.delivery import Delivered
from relay.upload.failures import PermanentUploadError, classify, error_code

log = structlog.get_logger("relay.uploader")


class Destination(Protocol):
    # False when no S3 credentials were found where the destination needs them.
    has_credentials: bool

    async def deliver(self, meta: ClipMeta) -> Delivered: ...

    async def abandon(self, meta: ClipMeta) -> None: ...


class Uploader:
    def __init__(
        self, spool: Spool, destination: Destination, retry: RetryConfig, stats: RelayStats, workers: int
    ) -> None:
        self._spool = spool
        self._destination = destination
        self._retry = retry
        self._stats = stats
        self._workers = workers

    @property
    def in_flight(self) -> set[str]:
        return self._spool.uploading

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for n in range(self._workers):
                group.create_task(self._work(), name=f"upload-worker-{n}")

    async def _work(self) -> None:
        while True:
            clip_id = await self._spool.pending.get()
            self.in_flight.add(clip_id)
            try:
                with structlog.contextvars.bound_contextvars(clip_id=clip_id):
                    await self._upload(clip_id)
            except Exception:
                # Spool I/O failed around the upload (e.g. EIO). The clip is still on
                # disk: try it again later rather than lose the worker.
                log.exception("upload_worker_error", clip_id=clip_id)
                await asyncio.sleep(self._retry.max_s)
                self._spool.pending.put_nowait(clip_id)
            finally:
                self.in_flight.discard(clip_id)

    async def _upload(self, clip_id: str) -> None:
        if not self._spool.clip_dir(clip_id).exists():
            return  # evicted (spool.full_policy) while it waited
        try:
            meta = await asyncio.to_thread(self._spool.meta, clip_id)
        except (OSError, ValueError, TypeError) as exc:
            await self._quarantine(clip_id, f"metadata is unreadable: {exc}", {})
            return
        started = time.monotonic()
        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                # tenacity sees BaseException too: a cancelled upload (shutdown) must
                # end here, not be "retried" forever.
                retry=retry_if_exception(lambda e: isinstance(e, Exception) and classify(e) is None),
                wait=wait_random_exponential(multiplier=self._retry.initial_s, max=self._retry.max_s),
                before_sleep=self._log_retry,
                reraise=True,
            ):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    delivered = await self._destination.deliver(meta)
        except Exception as exc:
            verdict = classify(exc) or PermanentUploadError(str(exc))
            with contextlib.suppress(Exception):  # best effort: the clip matters, not the parts
                await self._destination.abandon(meta)
            await self._quarantine(clip_id, verdict.reason, {**verdict.detail, "attempts": str(attempts)})
            return
        # Counted before the spool forgets it: S3 has confirmed, whatever happens next
        # (a cancelled removal only means the next start finds it already present).
        self._stats.clips_uploaded += 1
        self._stats.bytes_uploaded += meta.size
        self._stats.uploads_by_route[delivered.route] += 1
        self._stats.last_upload_at = time.time()
        self._stats.observe_upload(time.monotonic() - started)
        await asyncio.to_thread(self._spool.remove, clip_id)
        log.info(
            "clip_uploaded",
            camera=meta.camera,
            key=delivered.key,
            bytes=meta.size,
            attempts=attempts,
            seconds=round(time.monotonic() - started, 3),
            already_present=delivered.already_present,
            route=delivered.route,
        )

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = error_code(exc) if exc else "unknown"
        self._stats.upload_retries += 1
        self._stats.retries_by_reason[reason] += 1
        log.warning(
            "upload_retry",
            attempt=state.attempt_number,
            reason=reason,
            error=str(exc)[:300],
            wait_s=round(state.upcoming_sleep, 2),
        )

    async def _quarantine(self, clip_id: str, reason: str, detail: dict[str, str]) -> None:
        await asyncio.to_thread(self._spool.quarantine, clip_id, reason, detail)
        self._stats.clips_quarantined += 1
