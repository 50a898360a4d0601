"""The relay's one configuration file: strict models, one per concern.

Unknown keys are refused so that a typo never silently falls back to a default,
and every error names the field and the fix (see ``ConfigError``).
"""

from __future__ import annotations

import os
import re
import tomllib
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from relay.config_base import MiB, Port, Strict, base_url
from relay.config_destinations import APIGW_DEFAULT_BODY_BYTES as APIGW_DEFAULT_BODY_BYTES
from relay.config_destinations import S3_MAX_PARTS
from relay.config_destinations import ApiGatewayConfig as ApiGatewayConfig
from relay.config_destinations import S3Config as S3Config
from relay.config_footage import DEFAULT_STREAM_OPTIONS as DEFAULT_STREAM_OPTIONS
from relay.config_footage import MAX_EXPORT_PIECE_S as MAX_EXPORT_PIECE_S
from relay.config_footage import BackfillConfig as BackfillConfig
from relay.config_footage import CameraConfig as CameraConfig
from relay.config_pair import HaConfig as HaConfig
from relay.config_pair import SiteConfig as SiteConfig
from relay.templates import FilenameTemplate

# Secrets may come from the environment instead of the file, so that the file
# can be world-readable and the secret can live in a systemd credential or
# EnvironmentFile. The names are fixed and documented in the example config.
ENV_PREFIX = "AXIS_RELAY_"


class ConfigError(Exception):
    """A configuration mistake, phrased for the operator: field, problem, fix."""


class IngestConfig(Strict):
    host: str = "0.0.0.0"
    port: Port = 8443
    # How cameras reach the relay, e.g. https://gateway.local:8443: what `axis-relay
    # camera setup` puts in their recipients and `camera check` looks for.
    public_url: str | None = None
    # Checked by `check-config` (they must load as a pair), not here: the example config
    # names the files a gateway has.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # For a gateway whose CPU has no AES instructions (a Raspberry Pi 4): ChaCha20-
    # Poly1305, chosen by the relay, over TLS 1.2. Elsewhere AES-GCM is as cheap or cheaper.
    tls_prefer_chacha20: bool = False
    # A device streams a clip at real-time speed through its post-buffer, so
    # there is no total body deadline; only silence this long ends a request.
    idle_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    # Bounds how long shutdown waits for devices that are still sending.
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 30.0
    max_body_bytes: Annotated[int, Field(gt=0)] = 4096 * MiB
    # Longest request line or header field (431/400 above it); devices send short ones.
    max_header_bytes: Annotated[int, Field(ge=1024, le=65536)] = 8190
    # Connections held at once, handshakes included (also bounded by the file descriptor
    # limit: relay.ingest.connections.fd_budget); over it, the oldest with no request in
    # progress is cut. About 0.3 MB each with TLS.
    max_connections: Annotated[int, Field(ge=8)] = 256
    # A TLS handshake, and then the start of a request, must come within this long.
    head_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    # One device sending more clips than this at once gets 429 (its buffer is stuck).
    max_uploads_per_device: Annotated[int, Field(ge=1)] = 4
    # Failed logins per source address per minute before it gets 429 without a check.
    auth_failures_per_minute: Annotated[int, Field(ge=1)] = 10
    # Failed logins from all addresses together per minute; past it, addresses that
    # failed lately get 429 at once (devices that log in right are still served).
    auth_failures_per_minute_total: Annotated[int, Field(ge=1)] = 60

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return (
            None if value is None else base_url(value, "the relay's base URL as cameras reach it", "192.168.1.10:8443")
        )

    @model_validator(mode="after")
    def _tls_pair(self) -> IngestConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key for HTTPS, or neither for plain HTTP")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


class SpoolConfig(Strict):
    # Not /tmp: that may be tmpfs and is wiped at boot, taking clips with it.
    dir: Path = Path("/var/lib/axis-relay/spool")
    # Most bytes of clips waiting for upload; 0 = no limit but the disk.
    max_bytes: Annotated[int, Field(ge=0)] = 0
    # Disk space always left free for the OS, journald and the rest of the gateway.
    min_free_bytes: Annotated[int, Field(ge=0)] = 256 * MiB
    # When a new clip does not fit: "reject" answers the device 507 and keeps every
    # clip already accepted; "evict_oldest" deletes the oldest clips not yet uploaded.
    full_policy: Literal["reject", "evict_oldest"] = "reject"


class DeviceConfig(Strict):
    """One camera or encoder allowed to send clips as /upload/<name>."""

    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    # Source networks this device may send from, e.g. ["192.168.10.0/24"]; empty = any.
    allow_from: list[IPv4Network | IPv6Network] = Field(default_factory=list)
    # When a clip's footage starts, read from its file name where the Matroska header
    # does not say: the action's file-name template as set on the device
    # (e.g. "video%y-%m-%d_%H-%M-%S-%f_#s.mkv"), and the zone its %H is in unless the
    # name carries %z.
    filename_template: str | None = None
    filename_timezone: str = "UTC"
    # The device's IP address on the LAN, so that a TLS handshake failing from it is
    # pinned on this device (/healthz, the status page); unset = the host of camera.url.
    address: str | None = None
    camera: CameraConfig | None = None

    @field_validator("allow_from", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        """One sentence per wrong entry, instead of pydantic's two tries (IPv4, IPv6)."""
        if not isinstance(value, list):
            return value
        networks = []
        for n, entry in enumerate(value):
            try:
                networks.append(ip_network(str(entry)))
            except ValueError as exc:
                raise ValueError(
                    f'entry {n} ({entry!r}) is not a network: {exc}; write one such as "192.168.10.0/24", '
                    'or a single address such as "192.168.10.20"'
                ) from None
        return networks

    @field_validator("address")
    @classmethod
    def _ip_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address; write the device's address, e.g. 192.168.1.20") from None

    @field_validator("filename_template")
    @classmethod
    def _template_has_time(cls, value: str | None) -> str | None:
        if value is not None:
            FilenameTemplate(value)  # raises ValueError naming what is wrong
        return value

    @field_validator("filename_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as Europe/Stockholm, or UTC"
            ) from None
        return value

    @model_validator(mode="after")
    def _has_credentials(self) -> DeviceConfig:
        if self.token is None and self.password is None:
            raise ValueError("give the device a token (query accessToken=...) or a username and password")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class LedgerConfig(Strict):
    """The clip ledger: every clip received, and where it went (``axis-relay clips``)."""

    # An SQLite file; unset = ledger.sqlite3 in spool.dir.
    path: Path | None = None
    # Rows older than this are pruned (never those of clips still queued).
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 30


class AuditConfig(Strict):
    """The periodic audit: is the footage the ledger counts as delivered still in S3?
    (relay.coverage.audit; reads the bucket with the [s3] credentials.)"""

    enabled: bool = True
    interval_s: Annotated[float, Field(gt=0)] = 3600.0
    window_hours: Annotated[float, Field(gt=0)] = 24.0


class RetryConfig(Strict):
    # Full-jitter exponential backoff: each wait is uniform in [0, min(cap, initial * 2**n)].
    initial_s: Annotated[float, Field(gt=0)] = 1.0
    max_s: Annotated[float, Field(gt=0)] = 300.0


class MetricsConfig(Strict):
    # Prometheus /metrics and /healthz on their own listener; loopback unless a
    # scraper elsewhere needs it (plain HTTP, no credentials: keep it off the LAN).
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 9108
    # /healthz turns unhealthy when clips wait and nothing was uploaded for this long.
    upload_stall_s: Annotated[float, Field(gt=0)] = 900.0


class HealthConfig(Strict):
    """When /healthz, the status page and `axis-relay status` say "failing"."""

    # Upload attempts failing this long, with clips waiting and none delivered, is failing.
    upload_failing_after_s: Annotated[float, Field(gt=0)] = 120.0


class LogConfig(Strict):
    # auto: the journal's native protocol under systemd, readable lines on a terminal,
    # JSON lines otherwise; json for log shippers.
    format: Literal["auto", "json", "console", "journal"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


# A device name is one URL path segment and one S3 key segment.
DEVICE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class RelayConfig(Strict):
    # Where clips go: "s3" (the [s3] section) or "apigw" (the [apigw] section).
    destination: Literal["s3", "apigw"] = "s3"
    site: SiteConfig = SiteConfig()
    ha: HaConfig = HaConfig()
    ingest: IngestConfig = IngestConfig()
    spool: SpoolConfig = SpoolConfig()
    s3: S3Config | None = None
    apigw: ApiGatewayConfig | None = None
    ledger: LedgerConfig = LedgerConfig()
    backfill: BackfillConfig = BackfillConfig()
    audit: AuditConfig = AuditConfig()
    retry: RetryConfig = RetryConfig()
    metrics: MetricsConfig = MetricsConfig()
    health: HealthConfig = HealthConfig()
    log: LogConfig = LogConfig()
    devices: dict[Annotated[str, Field(pattern=DEVICE_NAME)], DeviceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _parts_fit_the_largest_clip(self) -> RelayConfig:
        for name, section in (("s3", self.s3), ("apigw", self.apigw)):
            if section is None:
                continue
            parts = -(-self.ingest.max_body_bytes // section.part_size_bytes)
            if parts > S3_MAX_PARTS:
                smallest = -(-self.ingest.max_body_bytes // S3_MAX_PARTS // MiB) * MiB
                largest = self.ingest.max_body_bytes
                raise ValueError(
                    f"{name}.part_size_bytes: a clip of ingest.max_body_bytes ({largest}) would take {parts} parts, "
                    f"and S3 allows {S3_MAX_PARTS}; raise {name}.part_size_bytes to at least {smallest}, or lower "
                    "ingest.max_body_bytes"
                )
        return self

    @model_validator(mode="after")
    def _destination_configured(self) -> RelayConfig:
        if self.destination == "s3" and self.s3 is None:
            raise ValueError('destination is "s3" but there is no [s3] section; add one with at least bucket = ...')
        if self.destination == "apigw" and self.apigw is None:
            raise ValueError('destination is "apigw" but there is no [apigw] section; add one with at least url = ...')
        if self.destination == "apigw" and self.apigw and self.apigw.fallback == "s3" and self.s3 is None:
            raise ValueError('apigw.fallback is "s3" but there is no [s3] section; add one, or set fallback = "none"')
        return self

    @model_validator(mode="after")
    def _a_pair_can_coordinate(self) -> RelayConfig:
        """Two gateways coordinate through the bucket alone, and split the cameras by
        their URLs: both must be known, and a clip's key must not depend on which relay
        received it."""
        if not self.site.paired:
            return self
        if self.destination != "s3" or self.s3 is None:
            raise ValueError(
                'site.peers: two gateways coordinate through S3; set destination = "s3" with an [s3] section, or '
                "remove site.peers"
            )
        own = self.ingest.public_url
        if own is None:
            raise ValueError(
                "site.peers: a pair splits the cameras by each relay's URL; set ingest.public_url to this relay's "
                "URL as cameras (and the peer's site.peers) name it"
            )
        if own in self.site.peers:
            raise ValueError(f"site.peers: {own} is this relay's own ingest.public_url; list the other relay's URL")
        if "{clip_id}" in self.s3.key_template.replace(" ", ""):
            raise ValueError(
                "s3.key_template: {clip_id} differs between the two relays of a pair, so each clip would be stored "
                "twice; use the default template (camera, footage times, file name)"
            )
        return self

    @property
    def ledger_path(self) -> Path:
        return self.ledger.path or self.spool.dir / "ledger.sqlite3"

    @property
    def upload_workers(self) -> int:
        section = self.apigw if self.destination == "apigw" else self.s3
        return section.workers if section else 1


def _env_name(*parts: str) -> str:
    return ENV_PREFIX + "_".join(re.sub(r"[^A-Za-z0-9]", "_", p).upper() for p in parts)


def _apply_env(raw: dict[str, object], environ: dict[str, str]) -> None:
    """Let secrets come from the environment (they win over the file)."""
    s3 = raw.get("s3")
    if isinstance(s3, dict):
        for key in ("access_key_id", "secret_access_key"):
            if (value := environ.get(_env_name("s3", key))) is not None:
                s3[key] = value
    apigw = raw.get("apigw")
    if isinstance(apigw, dict) and (value := environ.get(_env_name("apigw", "api_key"))) is not None:
        apigw["api_key"] = value
    devices = raw.get("devices")
    if isinstance(devices, dict):
        for name, device in devices.items():
            if not isinstance(device, dict):
                continue
            for key in ("token", "password"):
                if (value := environ.get(_env_name("device", name, key))) is not None:
                    device[key] = value
            camera = device.get("camera")
            if isinstance(camera, dict) and (value := environ.get(_env_name("camera", name, "password"))) is not None:
                camera["password"] = value


def _describe(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key; remove it or check its spelling against config/relay.example.toml")
        elif e["type"] == "missing":
            lines.append(f"{where}: required; add it (see config/relay.example.toml)")
        else:
            # A validator's own sentence, without pydantic's "Value error, " before it.
            lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def parse_config(raw: dict[str, object], environ: dict[str, str] | None = None) -> RelayConfig:
    _apply_env(raw, dict(os.environ) if environ is None else environ)
    try:
        return RelayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def load_config(path: Path, environ: dict[str, str] | None = None) -> RelayConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror}); pass an existing file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(raw, environ)
    except ConfigError as exc:
        raise ConfigError(f"{path}:\n{exc}") from None
