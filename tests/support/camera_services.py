"""The emulated camera's set-up side: the event and action services (SOAP 1.2 at
/vapix/services), continuous recording profiles, param.cgi, and a rule engine that
acts on the rules it holds: a pulse rule whose action is "send video clip" makes the
camera push a clip to the action's upload_url every interval, as a device would.

Records every SOAP operation; answers faults in the SOAP 1.2 shape (HTTP 500) for a
template it does not know, a parameter left out, an id it does not hold, and on
demand (``fault_on``) for any operation.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape, quoteattr

import aiohttp
from aiohttp import web

from tests.support.footage import clip_bytes

if TYPE_CHECKING:
    from tests.support.vapix_camera import CameraEmulator

ACTION = "http://www.axis.com/vapix/ws/action1"
EVENT = "http://www.axis.com/vapix/ws/event1"
SOAP = "http://www.w3.org/2003/05/soap-envelope"
_RECIPIENT = "upload_url login password proxy_host proxy_port proxy_login proxy_password qos validate_server_cert"
_CLIP = "stream_options pre_duration post_duration create_folder filename max_file_size max_duration custom_params"
# The parameters each template requires (every one present, empty if unused).
TEMPLATES = {
    "com.axis.recipient.https": _RECIPIENT.split(),
    "com.axis.action.fixed.send_videoclip.https": f"{_CLIP} {_RECIPIENT}".split(),
}


class Fault(Exception):
    def __init__(self, subcode: str, text: str) -> None:
        super().__init__(text)
        self.subcode = subcode
        self.text = text


@dataclass
class EventServices:
    recipients: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: list[str] = field(default_factory=list)
    fault_on: str | None = None  # the next call of this operation answers a fault
    continuous: dict[str, dict[str, str]] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)  # what param.cgi updated
    # The rule engine's pushes: (HTTP status or exception name, file name).
    pushes: list[tuple[str, str]] = field(default_factory=list)
    # Pulses (epoch seconds) whose clip the buffer loses: produced (#s counted), sent to
    # no recipient, as com.axis.Streamer.Buffer.Error.Retry does.
    lost_pulses: set[float] = field(default_factory=set)
    trust: ssl.SSLContext | None = None  # what the camera trusts when it validates the relay
    # Firmware that does not echo secrets: GetActionConfigurations answers these masked.
    masks_secrets: bool = False
    # The element GetScheduledEvents wraps each event in (a firmware may name it otherwise).
    scheduled_event_tag: str = "ScheduledEvent"
    _next_id: int = 1

    def changed(self) -> tuple[int, int, int, int, int, str]:
        """A fingerprint of everything set-up may change (for 'changes nothing')."""
        return (
            len(self.recipients),
            len(self.actions),
            len(self.events),
            len(self.rules),
            len(self.continuous),
            self.parameters.get("Storage.S0.CleanupMaxAge", ""),
        )

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    # ----- SOAP -----------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = ET.fromstring(await request.read()).find(f"{{{SOAP}}}Body")
            call = next(iter(body)) if body is not None else None
        except (ET.ParseError, StopIteration):
            return _fault("SOAP-ENV:Sender", "ter:InvalidArgs", "not a SOAP envelope")
        if call is None:
            return _fault("SOAP-ENV:Sender", "ter:InvalidArgs", "empty body")
        operation = call.tag.split("}")[-1]
        self.operations.append(operation)
        try:
            if self.fault_on == operation:
                self.fault_on = None
                raise Fault("ter:Action", f"emulated failure of {operation}")
            inner = self._dispatch(operation, call)
        except Fault as fault:
            return _fault("SOAP-ENV:Receiver", fault.subcode, fault.text)
        prefix = "aev" if "Scheduled" in operation else "aa"
        return web.Response(
            status=200,
            content_type="application/soap+xml",
            text=(
                f'<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP}" '
                f'xmlns:aa="{ACTION}" xmlns:aev="{EVENT}"><SOAP-ENV:Body><{prefix}:{operation}Response>{inner}'
                f"</{prefix}:{operation}Response></SOAP-ENV:Body></SOAP-ENV:Envelope>"
            ),
        )

    def _dispatch(self, operation: str, call: ET.Element) -> str:
        if operation in ("AddRecipientConfiguration", "AddActionConfiguration"):
            kind = "Recipient" if "Recipient" in operation else "Action"
            new = _child(call, f"New{kind}Configuration")
            template = _text(new, "TemplateToken")
            if template not in TEMPLATES:
                raise Fault("aa:InvalidTemplateToken", f"unknown template {template}")
            values = {p.attrib["Name"]: p.attrib.get("Value", "") for p in new.iter(f"{{{ACTION}}}Parameter")}
            if missing := [n for n in TEMPLATES[template] if n not in values]:
                raise Fault("aa:InvalidParameters", f"missing parameters {missing}")
            store = self.recipients if kind == "Recipient" else self.actions
            identifier = self._new_id()
            store[identifier] = {"name": _text(new, "Name"), "template": template, "parameters": values}
            return f"<aa:ConfigurationID>{identifier}</aa:ConfigurationID>"
        if operation == "AddScheduledEvent":
            new = _child(call, "NewScheduledEvent", EVENT)
            identifier = self._new_id()
            calendar = "".join(new.itertext()).strip()
            self.events[identifier] = {"name": _text(new, "Name", EVENT), "icalendar": calendar}
            return f"<aev:EventID>{identifier}</aev:EventID>"
        if operation == "AddActionRule":
            new = _child(call, "NewActionRule")
            action = _text(new, "PrimaryAction")
            if action not in self.actions:
                raise Fault("aa:InvalidConfigurationID", f"no action configuration {action}")
            content = next((e.text or "" for e in new.iter() if e.tag.endswith("MessageContent")), "")
            identifier = self._new_id()
            self.rules[identifier] = {
                "name": _text(new, "Name"),
                "enabled": _text(new, "Enabled") == "true",
                "action": action,
                "filter": content,
                "fired": 0,
            }
            return f"<aa:RuleID>{identifier}</aa:RuleID>"
        removals = {
            "RemoveActionRule": (self.rules, "RuleID", ACTION),
            "RemoveActionConfiguration": (self.actions, "ConfigurationID", ACTION),
            "RemoveRecipientConfiguration": (self.recipients, "ConfigurationID", ACTION),
            "RemoveScheduledEvent": (self.events, "EventID", EVENT),
        }
        if operation in removals:
            store, element, namespace = removals[operation]
            identifier = _text(call, element, namespace)
            if store.pop(identifier, None) is None:
                raise Fault("aa:InvalidConfigurationID", f"no {element} {identifier}")
            return ""
        if operation in ("GetRecipientConfigurations", "GetActionConfigurations"):
            kind = "Recipient" if "Recipient" in operation else "Action"
            store = self.recipients if kind == "Recipient" else self.actions
            items = "".join(
                f"<aa:{kind}Configuration><aa:ConfigurationID>{i}</aa:ConfigurationID>"
                f"<aa:Name>{escape(c['name'])}</aa:Name><aa:TemplateToken>{c['template']}</aa:TemplateToken>"
                "<aa:Parameters>"
                + "".join(
                    # Value before Name, as devices write it.
                    f"<aa:Parameter Value={quoteattr(self._echo(k, v))} Name={quoteattr(k)}/>"
                    for k, v in c["parameters"].items()
                )
                + f"</aa:Parameters></aa:{kind}Configuration>"
                for i, c in store.items()
            )
            return f"<aa:{kind}Configurations>{items}</aa:{kind}Configurations>"
        if operation == "GetScheduledEvents":
            tag = self.scheduled_event_tag
            items = "".join(
                f"<aev:{tag}><aev:EventID>{i}</aev:EventID><aev:Name>{escape(e['name'])}</aev:Name>"
                f"<aev:Schedule><aev:ICalendar>{escape(e['icalendar'])}</aev:ICalendar></aev:Schedule>"
                f"</aev:{tag}>"
                for i, e in self.events.items()
            )
            return f"<aev:ScheduledEvents>{items}</aev:ScheduledEvents>"
        if operation == "GetActionRules":
            items = "".join(
                f"<aa:ActionRule><aa:RuleID>{i}</aa:RuleID><aa:Name>{escape(r['name'])}</aa:Name>"
                f"<aa:Enabled>{'true' if r['enabled'] else 'false'}</aa:Enabled><aa:StartEvent>"
                f'<wsnt:MessageContent xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2">{escape(r["filter"])}'
                f"</wsnt:MessageContent></aa:StartEvent><aa:PrimaryAction>{r['action']}</aa:PrimaryAction>"
                "</aa:ActionRule>"
                for i, r in self.rules.items()
            )
            return f"<aa:ActionRules>{items}</aa:ActionRules>"
        raise Fault("ter:ActionNotSupported", f"{operation} is not supported")

    def _echo(self, name: str, value: str) -> str:
        return "*" * 8 if self.masks_secrets and name in ("password", "custom_params") and value else value

    # ----- recording and parameters ---------------------------------------

    async def continuous_cgi(self, request: web.Request) -> web.Response:
        """As devices answer: the result on a child of <root>. Devices allow one continuous
        profile (NbrOfContinuousRecordingProfiles=1); a refusal here fills in the profile
        attribute of the error template, which a client must not read as a success."""
        name = request.path.rsplit("/", 1)[-1]
        if name == "addconfiguration.cgi":
            if not request.query.get("options"):
                return _xml('<root><configure profile="" result="ERROR" errormsg="Missing options"/></root>')
            if self.continuous:
                taken = next(iter(self.continuous))
                return _xml(
                    f'<root><configure profile="{taken}" result="ERROR" '
                    'errormsg="The maximum number of continuous recordings is reached"/></root>'
                )
            profile = str(len(self.continuous) + 1)
            self.continuous[profile] = {
                "diskid": request.query.get("diskid", ""),
                "options": request.query.get("options", ""),
            }
            return _xml(f'<root><configure profile="{profile}" result="OK"/></root>')
        if name == "removeconfiguration.cgi":
            if self.continuous.pop(request.query.get("profile", ""), None) is None:
                return _xml('<root><configure result="ERROR" errormsg="no such profile"/></root>')
            return _xml('<root><configure result="OK"/></root>')
        items = "".join(
            f'<configuration profile="{p}" diskid="{c["diskid"]}" options={quoteattr(c["options"])}/>'
            for p, c in self.continuous.items()
        )
        return _xml(f"<root><configurations>{items}</configurations></root>")

    async def param_cgi(self, request: web.Request) -> web.Response:
        action = request.query.get("action")
        if action == "list":
            group = request.query.get("group", "")
            return web.Response(
                text="".join(f"root.{k}={v}\n" for k, v in self.parameters.items() if k.startswith(group))
            )
        if action == "update":
            for key, value in request.query.items():
                if key != "action":
                    self.parameters[key.removeprefix("root.")] = value
            return web.Response(text="OK")
        return web.Response(text="# Error: unknown action")

    # ----- the rule engine: pulse -> send video clip ----------------------

    async def run_rules(self, camera: CameraEmulator) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                await asyncio.sleep(0.05)
                now = camera.now()
                for rule in list(self.rules.values()):
                    await self._maybe_fire(camera, session, rule, now)

    async def _maybe_fire(
        self, camera: CameraEmulator, session: aiohttp.ClientSession, rule: dict[str, Any], now: datetime
    ) -> None:
        event_id = rule["filter"].split('@Value="')[-1].split('"')[0]
        event = self.events.get(event_id)
        action = self.actions.get(rule["action"])
        if not (rule["enabled"] and event and action) or "INTERVAL=" not in event["icalendar"]:
            return
        interval = int(event["icalendar"].split("INTERVAL=")[1].split()[0])
        pulse = math.floor(now.timestamp() / interval) * interval
        if rule.get("last_pulse") == pulse:
            return
        first = "last_pulse" not in rule
        rule["last_pulse"] = pulse
        if first:
            return  # the rule was just made: its first pulse is the next one
        rule["fired"] += 1
        if pulse in self.lost_pulses:
            self.pushes.append(("lost in the buffer", str(pulse)))
            return
        await self._send_clip(camera, session, action["parameters"], datetime.fromtimestamp(pulse, UTC), rule["fired"])

    async def _send_clip(
        self, camera: CameraEmulator, session: aiohttp.ClientSession, p: dict[str, str], at: datetime, sequence: int
    ) -> None:
        starts = at - timedelta(milliseconds=int(p["pre_duration"] or 0))
        ends = at + timedelta(milliseconds=int(p["post_duration"] or 0))
        name = device_filename(p["filename"], starts, sequence)
        url = p["upload_url"] + (
            ("&" if "?" in p["upload_url"] else "?") + p["custom_params"] if p["custom_params"] else ""
        )
        query = dict(parse_qsl(url.split("?", 1)[1])) if "?" in url else {}
        auth = aiohttp.BasicAuth(p["login"], p["password"]) if p["login"] else None
        verify: ssl.SSLContext | bool = (self.trust or True) if p["validate_server_cert"] == "1" else False
        headers = {"Content-Type": "video/x-matroska", "Content-Disposition": f'attachment; filename="{name}"'}
        try:
            async with session.post(
                url.split("?", 1)[0],
                params=query,
                data=clip_bytes(camera.name, starts, ends, frame_bytes=camera.frame_bytes),
                headers=headers,
                auth=auth,
                ssl=verify,
            ) as answer:
                self.pushes.append((str(answer.status), name))
        except (aiohttp.ClientError, OSError) as exc:
            self.pushes.append((type(exc).__name__, name))


def device_filename(template: str, moment: datetime, sequence: int) -> str:
    """The device's file-name modifiers: %f is hundredths, #s the 5-digit sequence."""
    text = template.replace("%f", f"{moment.microsecond // 10000:02d}").replace("#s", f"{sequence:05d}")
    return moment.strftime(text)


def _child(parent: ET.Element, name: str, namespace: str = ACTION) -> ET.Element:
    found = parent.find(f"{{{namespace}}}{name}")
    if found is None:
        raise Fault("ter:InvalidArgs", f"no {name}")
    return found


def _text(parent: ET.Element, name: str, namespace: str = ACTION) -> str:
    return (parent.findtext(f"{{{namespace}}}{name}") or "").strip()


def _fault(code: str, subcode: str, text: str) -> web.Response:
    return web.Response(
        status=500,
        content_type="application/soap+xml",
        text=(
            f'<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP}" '
            'xmlns:ter="http://www.onvif.org/ver10/error"><SOAP-ENV:Body><SOAP-ENV:Fault><SOAP-ENV:Code>'
            f"<SOAP-ENV:Value>{code}</SOAP-ENV:Value><SOAP-ENV:Subcode><SOAP-ENV:Value>{subcode}</SOAP-ENV:Value>"
            f'</SOAP-ENV:Subcode></SOAP-ENV:Code><SOAP-ENV:Reason><SOAP-ENV:Text xml:lang="en">{escape(text)}'
            "</SOAP-ENV:Text></SOAP-ENV:Reason></SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
        ),
    )


def _xml(text: str) -> web.Response:
    return web.Response(text='<?xml version="1.0" encoding="UTF-8"?>' + text, content_type="text/xml")
