"""The back-fill soak, short: three cameras on a 2 s schedule, random drops, the relay
killed with SIGKILL and an S3 outage; every second that was recorded ends up in S3.
(``bench/soak.py`` runs it at a real 15 s cadence and prints the figures.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relay.dev.local_s3 import LocalS3
from tests.support.harness import TLS
from tests.support.soak import RESTART_HOLE_S, soak


async def test_every_recorded_second_reaches_s3_through_drops_a_kill_and_an_outage(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    result = await soak(tmp_path, tls, s3_server.endpoint_url, s3, bucket, cameras=3, cadence_s=2.0, clips=18)
    assert result.clips_dropped > 0
    assert result.clips_refused > 0
    assert result.outage_s > 0
    for name, coverage in result.coverage.items():
        assert coverage.fraction_of_fillable == 1.0, (name, coverage)
    # The one camera that restarted lost a few seconds that exist nowhere, and only those.
    unrecorded = sorted(c.unrecorded_s for c in result.coverage.values())
    assert unrecorded[:-1] == [0.0] * (len(unrecorded) - 1)
    assert abs(unrecorded[-1] - RESTART_HOLE_S) < 0.2
    assert result.gaps["filled"] > 0
    assert set(result.gaps) <= {"filled", "unfillable"}
