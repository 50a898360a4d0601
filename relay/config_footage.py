"""The config of the footage side: a camera's own API (VAPIX) and back-fill, which fetches
what a camera never delivered from its SD card."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from relay.config_base import MiB, Strict, base_url

# The continuous recording's stream options when none are configured: the camera's first
# video source, at its own default resolution and codec.
DEFAULT_STREAM_OPTIONS = "camera=1"

# Back-fill pieces: integrators export at most 10 minutes per request (vapix.md).
MAX_EXPORT_PIECE_S = 600.0


class CameraConfig(Strict):
    """How the relay reaches a device's own API (VAPIX), to fetch back footage it never
    delivered from its SD card, and to check it. The key names are fixed: operators'
    scripts and the relay's camera checks rely on them."""

    url: str
    username: str
    # Or in the environment as AXIS_RELAY_CAMERA_<NAME>_PASSWORD.
    password: SecretStr
    # Cameras usually carry a self-signed certificate: verify it against ca_bundle, or
    # set verify_tls = false on a LAN you trust.
    verify_tls: bool = True
    ca_bundle: FilePath | None = None
    disk: str = "SD_DISK"
    # "continuous": clips on a schedule that should cover all time, so any hole in time
    # is a gap; "events": clips only when something happens, so only a skipped
    # sequence number (#s) is a gap.
    expect: Literal["continuous", "events"]
    # The schedule's interval: with no clip for cadence_s + grace_s the camera is silent.
    cadence_s: Annotated[float, Field(gt=0)] = 15.0
    grace_s: Annotated[float, Field(ge=0)] = 30.0
    # A hole in time coverage shorter than this between two clips is not a gap.
    gap_threshold_s: Annotated[float, Field(gt=0)] = 2.0
    # Every call to the camera is given up after this long without an answer.
    timeout_s: Annotated[float, Field(gt=0)] = 20.0
    # The stream options of the continuous recording `camera setup` turns on (VAPIX
    # stream arguments, e.g. "camera=1&resolution=1920x1080&fps=15"); required by the
    # camera, so never empty.
    stream_options: Annotated[str, Field(min_length=1)] = DEFAULT_STREAM_OPTIONS

    @field_validator("url")
    @classmethod
    def _camera_url(cls, value: str) -> str:
        return base_url(value, "the camera's base URL, http(s)://host[:port]", "192.168.1.20")

    @model_validator(mode="after")
    def _bundle_needs_verify(self) -> CameraConfig:
        if self.ca_bundle is not None and not self.verify_tls:
            raise ValueError("ca_bundle is set but verify_tls = false; keep verify_tls = true to use the bundle")
        return self


class BackfillConfig(Strict):
    """Finding the footage cameras never delivered, and fetching it from their SD cards."""

    enabled: bool = True
    # How often each camera's clips are looked over for gaps.
    scan_interval_s: Annotated[float, Field(gt=0)] = 30.0
    # Footage fetched before and after a gap, so the key frame the device moves an
    # export's start back to and the clips on either side overlap it.
    margin_s: Annotated[float, Field(ge=0)] = 1.0
    # The longest range asked of a camera in one export, in whole seconds (at least 1),
    # as the camera takes them.
    piece_s: Annotated[float, Field(gt=0, le=MAX_EXPORT_PIECE_S)] = MAX_EXPORT_PIECE_S
    # Exports running at once over all cameras (one per camera at most).
    max_concurrent: Annotated[int, Field(ge=1, le=64)] = 2
    # No back-fill while more than this waits for upload: the uplink first carries what
    # the devices sent, and the spool never fills with footage that can wait on the card.
    max_queued_bytes: Annotated[int, Field(ge=0)] = 1024 * MiB
    # Backoff for a camera that is unreachable or answers nonsense.
    retry_initial_s: Annotated[float, Field(gt=0)] = 5.0
    retry_max_s: Annotated[float, Field(gt=0)] = 600.0
    # How far back each camera's clips are looked over for gaps (a card keeps a day by default).
    lookback_hours: Annotated[float, Field(gt=0)] = 48.0
