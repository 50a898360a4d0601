"""Chaos loop: a device streams clips while the relay is SIGKILLed at random moments.

At the end, the clips the device got a 200 for and the objects in S3 must match byte
for byte: none lost, none twice. Longer runs: CHAOS_CYCLES=100 .venv/bin/pytest tests/test_chaos.py -s
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relay.dev.local_s3 import LocalS3
from tests.support.chaos import kill_at_random
from tests.support.harness import TLS, raw_config


async def test_random_kills_lose_nothing_and_duplicate_nothing(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    await kill_at_random(raw_config(tmp_path, tls, s3_server.endpoint_url, bucket), tmp_path, tls, s3, bucket)
