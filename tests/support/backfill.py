"""What the back-fill and camera tests share: a relay config with a camera section
pointing at an emulated camera, the ledger's gaps as the relay wrote them, the footage
in S3, the site owner's own rule on the camera."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relay.camera import soap
from relay.camera.vapix import VapixClient
from relay.config import RelayConfig
from relay.ledger import GapRecord, Ledger
from tests.support.footage import frames_in
from tests.support.harness import DEVICE, TLS, TOKEN, list_keys, object_bytes, raw_config, wait_until
from tests.support.vapix_camera import FILENAME_TEMPLATE, CameraEmulator

# Fast rounds and short backoff, so retry paths run in test time.
FAST_BACKFILL = {"scan_interval_s": 0.2, "retry_initial_s": 0.1, "retry_max_s": 0.5, "margin_s": 0.5}


def camera_section(camera: CameraEmulator, tls: TLS, **overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "url": camera.url,
        "username": camera.username,
        "password": camera.password,
        "ca_bundle": str(tls.ca_file),
        "expect": "continuous",
        "cadence_s": 5.0,
        # Long enough that a test's own pace never looks like a silent camera.
        "grace_s": 600.0,
        "timeout_s": 5.0,
    }
    section.update(overrides)
    return section


def backfill_config(
    tmp_path: Path,
    tls: TLS,
    endpoint_url: str,
    bucket: str,
    camera: dict[str, Any] | None,
    **sections: Any,
) -> dict[str, Any]:
    device: dict[str, Any] = {"token": TOKEN, "filename_template": FILENAME_TEMPLATE}
    if camera is not None:
        device["camera"] = camera
    backfill = {**FAST_BACKFILL, **sections.pop("backfill", {})}
    return raw_config(tmp_path, tls, endpoint_url, bucket, devices={DEVICE: device}, backfill=backfill, **sections)


OWNERS = {"motion to VMS", "nightly", "motion rule"}  # the names add_owners_rule gives


async def add_owners_rule(config: RelayConfig) -> None:
    """An installer's own rule (an e-mail on motion, say): set-up must never touch it."""
    camera_config = config.devices[DEVICE].camera
    assert camera_config is not None
    async with VapixClient.open("x", camera_config) as client:
        values = {"upload_url": "https://elsewhere.example/upload", "qos": "0", "validate_server_cert": "1"}
        root = await client.soap(soap.add_configuration("Action", "motion to VMS", soap.CLIP_TEMPLATE, values))
        action = soap.answer_text(root, "ConfigurationID")
        event = soap.answer_text(await client.soap(soap.add_pulse("nightly", 86400)), "EventID")
        await client.soap(soap.add_rule("motion rule", event, action))


def ledger_gaps(ledger_path: Path, camera: str | None = None) -> list[GapRecord]:
    """The gaps as the relay wrote them (read-only, beside the running relay)."""
    if not ledger_path.exists():
        return []
    ledger = Ledger.open_readonly(ledger_path)
    try:
        return ledger.gaps.find(camera=camera)
    except Exception:
        return []  # not migrated yet: the relay is still starting
    finally:
        ledger.close()


def settled(gaps: list[GapRecord]) -> bool:
    return bool(gaps) and all(g.state in ("filled", "unfillable") for g in gaps)


async def footage_in_s3(s3: Any, bucket: str, camera: str, *, only: str = "") -> dict[str, set[int]]:
    """Frame indexes of ``camera`` per object key (keys containing ``only``)."""
    found = {}
    for key in await list_keys(s3, bucket):
        if only in key:
            found[key] = frames_in(await object_bytes(s3, bucket, key), camera)
    return found


async def frames_in_s3(s3: Any, bucket: str, camera: str) -> set[int]:
    """Every frame of ``camera`` that any object in the bucket holds."""
    have: set[int] = set()
    for frames in (await footage_in_s3(s3, bucket, camera)).values():
        have |= frames
    return have


async def wait_for_footage(s3: Any, bucket: str, camera: str, wanted: set[int], timeout: float = 60.0) -> None:
    async def complete() -> bool:
        return wanted <= await frames_in_s3(s3, bucket, camera)

    await wait_until(complete, timeout=timeout, what=f"{len(wanted)} frames of {camera} in S3")
