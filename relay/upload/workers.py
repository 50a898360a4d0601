"""A bounded pool of workers that takes queued clips, oldest first, to the destination.

What happens to a clip a worker holds, in every case:

- delivered: the destination confirmed it; it leaves the spool.
- a transient failure (network, 5xx, throttling, anything ``classify`` does not know):
  retried without limit, exponential backoff with full jitter and a cap.
- a permanent failure (``classify``): the clip goes to quarantine with the reason and
  the fix, and its open multipart upload, if any, is aborted.
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
import time
from typing import Protocol

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from relay.config import RetryConfig
from relay.ops.stats import RelayStats
from relay.spool.clip import ClipMeta
from relay.spool.spool import Spool
from relay.upload.delivery import Delivered
from relay.upload.failures import PermanentUploadError, classify, describe, error_code

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

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for n in range(self._workers):
                group.create_task(self._work(), name=f"upload-worker-{n}")

    async def _work(self) -> None:
        while (clip_id := await self._spool.claim()) is not None:
            try:
                with structlog.contextvars.bound_contextvars(clip_id=clip_id):
                    await self._upload(clip_id)
            except Exception:
                log.exception("upload_worker_error", clip_id=clip_id, retry_in_s=self._retry.max_s)
                self._stats.upload_worker_errors += 1
                self._spool.release(clip_id, after_s=self._retry.max_s)

    async def _upload(self, clip_id: str) -> None:
        try:
            meta = await asyncio.to_thread(self._spool.store.meta, clip_id)
        except FileNotFoundError:
            await self._spool.vanished(clip_id)
            return
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
        # Counted and logged as soon as the destination confirmed, before the spool lets
        # the clip go: a crash during the removal must not make a delivered clip look
        # lost (the next start finds its directory in trash/ and finishes the removal).
        self._stats.clips_uploaded += 1
        self._stats.bytes_uploaded += meta.size
        self._stats.uploads_by_route[delivered.route] += 1
        self._stats.last_upload_at = time.time()
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

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = error_code(exc) if exc else "unknown"
        self._stats.upload_retries += 1
        self._stats.retries_by_reason[reason] += 1
        log.warning(
            "upload_retry",
            attempt=state.attempt_number,
            reason=reason,
            error=describe(exc)[:300] if exc else "",
            wait_s=round(state.upcoming_sleep, 2),
        )

    async def _quarantine(self, clip_id: str, reason: str, detail: dict[str, str]) -> None:
        await self._spool.quarantine(clip_id, reason, detail)
        self._stats.clips_quarantined += 1
