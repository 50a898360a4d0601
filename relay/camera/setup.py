"""`axis-relay camera setup` and `remove`: what the relay puts on a camera so that it
sends its clips here, records continuously to its card and keeps that long enough.

What setup creates is named ``axis-relay:<relay>:<device>:...`` (``<relay>`` is
``site.relay_id``), so it is recognised and replaced, never duplicated, and nothing
else on the camera is touched, not even what the other relay of a pair set up for the
same camera: each relay has its own recipient, action, schedule and rule, and the
camera sends every clip to both. What an earlier version named ``axis-relay:<device>:...``
is taken as this relay's when its URL is this relay's (or, with no URL to compare, on
a site with one relay):

- the HTTPS recipient (the relay's URL for this device, its token or login);
- the "send video clip" action, repeating the recipient's parameters as the device
  requires, with a file-name template that carries the time with its UTC offset
  (``%z``) and the sequence number (``#s``);
- the schedule: a pulse every ``interval`` seconds;
- the rule joining the pulse to the action;
- continuous recording to the card, if there is none, and the card's retention raised
  to ``retention_hours`` (never lowered). These two protect footage: `remove` leaves
  them as they are.

The new configuration is added first and the old one removed only after every step
succeeded; a SOAP fault on the way removes what this run added (rolled back), so the
camera is left as it was, or the report says exactly what is left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from relay.camera import soap
from relay.camera.answers import CameraFailure
from relay.camera.soap import Configuration
from relay.camera.vapix import VapixClient
from relay.config import DEFAULT_STREAM_OPTIONS, DeviceConfig
from relay.ingest.secret_hash import is_hashed

PREFIX = "axis-relay:"
# What setup creates for one device, by the last part of its name.
PARTS = ("recipient", "clip", "pulse", "rule")
# Each Remove* operation, and the id element that both it and its Add* answer carry.
_ANSWER = {
    "RemoveActionRule": "RuleID",
    "RemoveActionConfiguration": "ConfigurationID",
    "RemoveScheduledEvent": "EventID",
    "RemoveRecipientConfiguration": "ConfigurationID",
}
# The file-name template set on the action: time with its offset, and #s.
FILENAME_TEMPLATE = "{device}_%y%m%d_%H%M%S_%f%z_#s.mkv"


class SetupError(Exception):
    """Set-up cannot be done as asked; the message says what to fix. Nothing was sent."""


@dataclass(frozen=True)
class Options:
    relay_url: str  # how the camera reaches the relay, e.g. https://gateway:8443
    relay_id: str  # site.relay_id: in every name setup creates
    interval_s: int = 15
    pre_ms: int = 0
    post_ms: int | None = None  # default: the interval, so the clips cover all time
    retention_hours: int = 48
    validate_server_cert: bool = True
    stream_options: str = ""
    # After set-up, wait this long for the camera's first clip to reach the relay (the
    # end-to-end test: rule, action, URL, TLS and credentials); 0 = do not wait.
    wait_s: float = 0.0


@dataclass(frozen=True)
class Plan:
    device: str
    relay_id: str
    recipient: dict[str, str]
    action: dict[str, str]
    interval_s: int
    retention_days: int
    # The stream options of the continuous recording to the card (never empty: the
    # Edge storage API marks them as required).
    recording_options: str = DEFAULT_STREAM_OPTIONS

    def name(self, part: str) -> str:
        return own_name(self.relay_id, self.device, part)

    @property
    def filename_template(self) -> str:
        return self.action["filename"]


@dataclass
class Outcome:
    lines: list[str] = field(default_factory=list)
    created: list[tuple[str, str]] = field(default_factory=list)  # (remove operation, id)
    removed: list[str] = field(default_factory=list)


def own_name(relay_id: str, device: str, part: str) -> str:
    return f"{PREFIX}{relay_id}:{device}:{part}"


def plain_secrets(device: DeviceConfig) -> tuple[str | None, str | None]:
    """The device's token and password as the camera must send them; None for one that
    is absent or stored hashed (the camera needs the secret itself)."""
    token = device.token.get_secret_value() if device.token else None
    password = device.password.get_secret_value() if device.password else None
    return (None if token is None or is_hashed(token) else token), (
        None if password is None or is_hashed(password) else password
    )


def plan(name: str, device: DeviceConfig, options: Options) -> Plan:
    """What setup will send for this device; SetupError before anything is sent."""
    token, password = plain_secrets(device)
    if not token and not password:
        raise SetupError(
            f"devices.{name}: the token and password are stored hashed, and the camera needs the secret itself; "
            f"give it as AXIS_RELAY_DEVICE_{name.upper().replace('-', '_')}_TOKEN in the environment of this command"
        )
    recipient = {
        "upload_url": f"{options.relay_url.rstrip('/')}/upload/{name}",
        "login": (device.username or "") if password else "",
        "password": password or "",
        "qos": "0",
        "validate_server_cert": "1" if options.validate_server_cert else "0",
    }
    post = options.post_ms if options.post_ms is not None else options.interval_s * 1000
    action = {
        **recipient,
        "stream_options": options.stream_options,
        "pre_duration": str(options.pre_ms),
        "post_duration": str(post),
        "filename": FILENAME_TEMPLATE.format(device=name),
        "custom_params": f"accessToken={token}" if token else "",
    }
    recording = device.camera.stream_options if device.camera else DEFAULT_STREAM_OPTIONS
    days = max(1, math.ceil(options.retention_hours / 24))
    return Plan(name, options.relay_id, recipient, action, options.interval_s, days, recording_options=recording)


def describe(p: Plan) -> list[str]:
    """What `--dry-run` prints: every call, secrets masked."""
    return [
        f"AddRecipientConfiguration {p.name('recipient')} {soap.RECIPIENT_TEMPLATE} {soap.masked(p.recipient)}",
        f"AddActionConfiguration {p.name('clip')} {soap.CLIP_TEMPLATE} {soap.masked(p.action)}",
        f"AddScheduledEvent {p.name('pulse')} RRULE:FREQ=SECONDLY;INTERVAL={p.interval_s}",
        f"AddActionRule {p.name('rule')} on {soap.PULSE_TOPIC} -> the action",
        "record/continuous/addconfiguration.cgi, if the card has no continuous recording",
        f"param.cgi Storage.<disk>.CleanupMaxAge >= {p.retention_days} day(s)",
        f"then remove the device's earlier {PREFIX}{p.relay_id}:{p.device}:* configuration, if any",
    ]


@dataclass
class Ours:
    """What an earlier setup left on the camera for one device."""

    recipients: list[Configuration]
    actions: list[Configuration]
    events: list[soap.ScheduledEvent]
    rules: list[soap.ActionRule]

    def removals(self) -> list[tuple[str, str, str]]:
        """(operation, id, name), rules first: nothing may point at what is gone."""
        return (
            [("RemoveActionRule", r.rule_id, r.name) for r in self.rules]
            + [("RemoveActionConfiguration", a.configuration_id, a.name) for a in self.actions]
            + [("RemoveScheduledEvent", e.event_id, e.name) for e in self.events]
            + [("RemoveRecipientConfiguration", r.configuration_id, r.name) for r in self.recipients]
        )


async def ours(client: VapixClient, device: str, relay_id: str, upload_url: str | None) -> Ours:
    """What this relay set up for ``device``: its own names, and those an earlier
    version gave without a relay id when they point at ``upload_url`` (None: adopted
    whatever they point at, for a site with one relay and no URL to compare)."""
    recipients = soap.configurations(await client.soap(soap.get("GetRecipientConfigurations")), "Recipient")
    actions = soap.configurations(await client.soap(soap.get("GetActionConfigurations")), "Action")
    events = soap.scheduled_events(await client.soap(soap.get("GetScheduledEvents")))
    rules = soap.action_rules(await client.soap(soap.get("GetActionRules")))
    mine = {own_name(relay_id, device, part) for part in PARTS}
    legacy = {f"{PREFIX}{device}:{part}" for part in PARTS}
    pointing = [c.parameters.get("upload_url", "").split("?")[0] for c in (*recipients, *actions) if c.name in legacy]
    if upload_url is None or upload_url.split("?")[0] in pointing:
        mine |= legacy
    return Ours(
        [r for r in recipients if r.name in mine],
        [a for a in actions if a.name in mine],
        [e for e in events if e.name in mine],
        [r for r in rules if r.name in mine],
    )


async def apply(client: VapixClient, p: Plan, disk: str) -> Outcome:
    """Set the camera up as planned; SetupFailed (after rolling back) on a fault."""
    outcome = Outcome()
    before = await ours(client, p.device, p.relay_id, p.recipient["upload_url"])
    try:
        recipient = await _add(
            client,
            outcome,
            "RemoveRecipientConfiguration",
            soap.add_configuration("Recipient", p.name("recipient"), soap.RECIPIENT_TEMPLATE, p.recipient),
        )
        action = await _add(
            client,
            outcome,
            "RemoveActionConfiguration",
            soap.add_configuration("Action", p.name("clip"), soap.CLIP_TEMPLATE, p.action),
        )
        event = await _add(client, outcome, "RemoveScheduledEvent", soap.add_pulse(p.name("pulse"), p.interval_s))
        rule = await _add(client, outcome, "RemoveActionRule", soap.add_rule(p.name("rule"), event, action))
    except CameraFailure as exc:
        left = await _roll_back(client, outcome)
        raise SetupFailed(exc, outcome, left) from None
    outcome.lines.append(
        f"recipient {recipient}, action {action}, schedule {event} (every {p.interval_s} s), rule {rule}"
    )
    for operation, identifier, name in before.removals():
        await client.soap(soap.remove(operation, _ANSWER[operation], identifier))
        outcome.removed.append(name)
    if outcome.removed:
        outcome.lines.append(f"replaced the earlier set-up ({len(outcome.removed)} item(s))")
    outcome.lines += await _recording_and_retention(client, disk, p)
    return outcome


async def _recording_and_retention(client: VapixClient, disk: str, p: Plan) -> list[str]:
    lines = []
    if any(r.get("diskid") == disk for r in await client.continuous_recordings()):
        lines.append(f"continuous recording to {disk}: already on")
    else:
        profile = await client.add_continuous_recording(disk, p.recording_options)
        lines.append(f"continuous recording to {disk}: turned on (profile {profile})")
    card = next((d for d in await client.disks() if d.disk_id == disk), None)
    if card is None:
        lines.append(f"retention: no disk {disk} on the camera; insert an SD card, then run setup again")
        return lines
    if card.cleanup_max_age_days and card.cleanup_max_age_days < p.retention_days:
        group = card.group or "S0"
        await client.set_parameters({f"Storage.{group}.CleanupMaxAge": str(p.retention_days)})
        lines.append(f"retention: raised from {card.cleanup_max_age_days} to {p.retention_days} day(s)")
    else:
        kept = f"{card.cleanup_max_age_days} day(s)" if card.cleanup_max_age_days else "until the card is full"
        lines.append(f"retention: {kept}, left as it is")
    return lines


class SetupFailed(Exception):
    def __init__(self, cause: CameraFailure, outcome: Outcome, left: list[str]) -> None:
        where = cause.call
        undone = ", ".join(f"{op} {i}" for op, i in outcome.created) or "nothing"
        message = f"set-up failed at {where}: {cause}; rolled back: {undone}"
        if left:
            message += f"; could NOT remove (remove by hand or run 'camera remove'): {', '.join(left)}"
        else:
            message += "; the camera is as it was"
        super().__init__(message)
        self.cause = cause
        self.left = left


async def _add(client: VapixClient, outcome: Outcome, undo: str, body: str) -> str:
    """One Add* call; what would undo it is noted first thing after it succeeded."""
    identifier = soap.answer_text(await client.soap(body), _ANSWER[undo])
    outcome.created.append((undo, identifier))
    return identifier


async def _roll_back(client: VapixClient, outcome: Outcome) -> list[str]:
    left = []
    for operation, identifier in reversed(outcome.created):
        try:
            await client.soap(soap.remove(operation, _ANSWER[operation], identifier))
        except CameraFailure:
            left.append(f"{operation} {identifier}")
    return left


async def remove(client: VapixClient, device: str, relay_id: str, upload_url: str | None) -> list[str]:
    """Remove what this relay's setup created for this device, and nothing else (not the
    other relay's of a pair); their names."""
    removed = []
    for operation, identifier, name in (await ours(client, device, relay_id, upload_url)).removals():
        await client.soap(soap.remove(operation, _ANSWER[operation], identifier))
        removed.append(name)
    return removed
