"""`axis-relay camera check`: one row per camera, every line an operator needs to know
the camera will send its clips here and keep footage to fetch back, each failing line
with its fix. Read-only: nothing is changed on the camera."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from relay.camera import soap
from relay.camera.answers import CLOCK_TOLERANCE_S, CameraError, CameraFailure
from relay.camera.setup import PREFIX, plain_secrets
from relay.camera.vapix import VapixClient
from relay.config import CameraConfig, DeviceConfig


@dataclass
class Line:
    what: str
    ok: bool
    value: str
    fix: str = ""


@dataclass
class CameraReport:
    camera: str
    lines: list[Line] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(line.ok for line in self.lines)

    def add(self, what: str, ok: bool, value: str, fix: str = "") -> bool:
        self.lines.append(Line(what, ok, value, "" if ok else fix))
        return ok

    def as_json(self) -> dict[str, Any]:
        return {"camera": self.camera, "ok": self.ok, "lines": [asdict(line) for line in self.lines]}


async def check(
    name: str,
    device: DeviceConfig,
    relay_url: str | None,
    last_clip: str | None = None,
    *,
    peers: Sequence[str] = (),
) -> CameraReport:
    """``last_clip``: the newest clip from this device in the relay's ledger (it logged in
    to send it), the evidence when the camera will not show the credentials it sends.
    ``peers``: the other relay of a pair, whose recipient and rule are checked too."""
    report = CameraReport(name)
    camera = device.camera
    if camera is None:
        report.add("camera access", False, "none", f"add [devices.{name}.camera] with url, username and password")
        return report
    async with VapixClient.open(name, camera) as client:
        try:
            await _check(report, client, name, device, camera, relay_url, last_clip)
            for peer in peers:
                await _check_peer(report, client, name, peer)
        except CameraError as exc:
            if exc.transient:
                report.add("reachable", False, exc.reason, f"check that {camera.url} is on and reachable from here")
            elif "username or password" in exc.reason:
                report.add("reachable", True, camera.url)
                report.add("authentication", False, "refused", exc.reason)
            else:
                report.add(exc.call, False, exc.reason, "see the reason")
        except CameraFailure as exc:  # a SOAP fault
            report.add(exc.call, False, exc.reason, "the event and action services refused the call")
    return report


async def _check(
    report: CameraReport,
    client: VapixClient,
    name: str,
    device: DeviceConfig,
    camera: CameraConfig,
    relay_url: str | None,
    last_clip: str | None,
) -> None:
    info = await client.device_info()
    report.add("reachable", True, camera.url)
    report.add("authentication", True, camera.username)
    report.add(
        "device",
        True,
        f"{info.get('Brand', 'AXIS')} {info.get('ProdNbr', '?')}, firmware {info.get('Version', '?')}, "
        f"serial {info.get('SerialNumber', '?')}",
    )
    clock = await client.clock()
    offset = clock.offset_s if clock.offset_s is not None else 0.0
    report.add(
        "time synced",
        clock.synced is not False and abs(offset) < CLOCK_TOLERANCE_S,
        f"NTP {'synced' if clock.synced else 'not synced' if clock.synced is False else 'unknown'}, "
        f"offset {offset:+.1f} s",
        "turn on NTP on the camera (System > Date and time) with a server it reaches",
    )
    disks = await client.disks()
    card = next((d for d in disks if d.disk_id == camera.disk), None)
    if report.add("SD card", card is not None and card.usable, _card(card, camera.disk), "insert or repair the card"):
        assert card is not None
        days = card.cleanup_max_age_days
        report.add(
            "retention",
            True,
            f"{days} day(s)" if days else "until the card is full",
        )
    recording = [r for r in await client.continuous_recordings() if r.get("diskid") == camera.disk]
    report.add(
        "continuous recording",
        bool(recording),
        f"on (profile {recording[0].get('profile')})" if recording else "off",
        f"run 'axis-relay camera setup {name}' (or Recordings > Continuous in the camera's web page)",
    )
    await _check_rule(report, client, name, device, relay_url, last_clip)


async def _check_rule(
    report: CameraReport,
    client: VapixClient,
    name: str,
    device: DeviceConfig,
    relay_url: str | None,
    last_clip: str | None,
) -> None:
    actions = soap.configurations(await client.soap(soap.get("GetActionConfigurations")), "Action")
    rules = soap.action_rules(await client.soap(soap.get("GetActionRules")))
    target = f"{relay_url.rstrip('/')}/upload/{name}" if relay_url else f"/upload/{name}"
    pointing = [a for a in actions if a.template == soap.CLIP_TEMPLATE and target in a.parameters.get("upload_url", "")]
    fix = f"run 'axis-relay camera setup {name}'"
    if not report.add("recipient", bool(pointing), pointing[0].parameters["upload_url"] if pointing else "none", fix):
        return
    credentialed = [a for a in pointing if _credentials_match(a.parameters, device)]
    hidden = [a for a in pointing if not credentials_readable(a.parameters)]
    if not credentialed and hidden:
        # Firmware that masks what it sends: nothing to compare, so the proof is a login
        # that worked, never a guess that the token is stale.
        said = "cannot be read back (the camera masks them)"
        evidence = f"; the last clip from {name} logged in: {last_clip}" if last_clip else "; no clip from it yet"
        if not report.add(
            "credentials",
            last_clip is not None,
            said + evidence,
            "press Test in the camera's recipient and look for device_test_ok in the relay's log, or wait for "
            f"a clip (axis-relay clips --camera {name}); if the relay refuses it, {fix} again",
        ):
            return
        credentialed = hidden
    elif not report.add(
        "credentials", bool(credentialed), "this device's" if credentialed else "wrong or missing", f"{fix} again"
    ):
        return
    action = credentialed[0]
    enabled = [r for r in rules if r.primary_action == action.configuration_id and r.enabled]
    report.add(
        "rule",
        bool(enabled),
        f"{enabled[0].name or enabled[0].rule_id} sends clips" if enabled else "no enabled rule uses the action",
        fix,
    )
    validates = action.parameters.get("validate_server_cert") == "1"
    report.add(
        "relay certificate",
        True,
        "validated by the camera: its CA (gen-cert's ca.crt) must be installed on the camera"
        if validates
        else "not validated (validate_server_cert = 0)",
    )
    if not action.name.startswith(PREFIX):
        report.lines[-1].value += "; configured by hand, not by 'camera setup'"


async def _check_peer(report: CameraReport, client: VapixClient, name: str, peer: str) -> None:
    """The pair's other relay: an action sending this device's clips to it, with an
    enabled rule (its credentials are the peer's to check)."""
    actions = soap.configurations(await client.soap(soap.get("GetActionConfigurations")), "Action")
    rules = soap.action_rules(await client.soap(soap.get("GetActionRules")))
    target = f"{peer}/upload/{name}"
    pointing = [a for a in actions if a.template == soap.CLIP_TEMPLATE and target in a.parameters.get("upload_url", "")]
    ids = {a.configuration_id for a in pointing}
    enabled = [r for r in rules if r.primary_action in ids and r.enabled]
    if not pointing:
        value = "none"
    elif not enabled:
        value = f"{target}, but no enabled rule uses it"
    else:
        value = f"{target} ({enabled[0].name or enabled[0].rule_id})"
    report.add("peer recipient", bool(enabled), value, f"run 'axis-relay camera setup {name}' on the relay at {peer}")


def credentials_readable(parameters: dict[str, str]) -> bool:
    """False when the camera does not show the secrets an action sends: masked with
    asterisks, or echoed empty (whether firmware masks them is not documented)."""
    secrets = [parameters.get("custom_params", ""), parameters.get("password", "")]
    if any(value and set(value) == {"*"} for value in secrets):
        return False
    return "accessToken=" in parameters.get("upload_url", "") or any(secrets)


def _credentials_match(parameters: dict[str, str], device: DeviceConfig) -> bool:
    plain_token, plain_password = plain_secrets(device)
    if plain_token and f"accessToken={plain_token}" in parameters.get("custom_params", "") + parameters.get(
        "upload_url", ""
    ):
        return True
    if plain_password and parameters.get("login") == device.username and parameters.get("password") == plain_password:
        return True
    if plain_token or plain_password:
        return False  # a secret the relay can compare, and the camera sends another
    # Only hashed secrets: they cannot be compared; a login set at all is the best one can say.
    return bool(parameters.get("custom_params") or parameters.get("login"))


def _card(card: Any, disk: str) -> str:
    if card is None:
        return f"no {disk}"
    free_gb = card.free_kb / 1024 / 1024
    return f"{card.disk_id} {card.status}, {free_gb:.1f} GB free of {card.total_kb / 1024 / 1024:.1f} GB"


async def check_all(
    devices: dict[str, DeviceConfig],
    names: list[str],
    relay_url: str | None,
    last_clips: dict[str, str] | None = None,
    *,
    peers: Sequence[str] = (),
) -> list[CameraReport]:
    clips = last_clips or {}
    return list(await asyncio.gather(*(check(n, devices[n], relay_url, clips.get(n), peers=peers) for n in names)))


def table(reports: list[CameraReport]) -> str:
    lines = []
    for report in reports:
        lines.append(f"{report.camera}: {'OK' if report.ok else 'NEEDS ATTENTION'}")
        for line in report.lines:
            mark = "ok  " if line.ok else "FAIL"
            lines.append(f"  {mark} {line.what:<21} {line.value}" + (f"\n       fix: {line.fix}" if line.fix else ""))
    return "\n".join(lines)
