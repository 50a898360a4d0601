"""The camera's event and action services: SOAP 1.2 at ``POST /vapix/services``.

Recipients, action configurations, scheduled events and action rules, as
``shared/vapix.md`` documents them (namespaces ``action1`` and ``event1``): add, list
and remove. Every parameter of a template is sent, empty where unused, as the device
requires. A SOAP Fault is ``SoapFault`` naming the operation that failed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from relay.camera.answers import CameraFailure

ACTION = "http://www.axis.com/vapix/ws/action1"
EVENT = "http://www.axis.com/vapix/ws/event1"
SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSNT = "http://docs.oasis-open.org/wsn/b-2"
_NS = {"aa": ACTION, "aev": EVENT, "soap": SOAP, "wsnt": WSNT}

RECIPIENT_TEMPLATE = "com.axis.recipient.https"
CLIP_TEMPLATE = "com.axis.action.fixed.send_videoclip.https"
PULSE_TOPIC = "tns1:UserAlarm/tnsaxis:Recurring/Pulse"
RECIPIENT_PARAMETERS = (
    "upload_url",
    "login",
    "password",
    "proxy_host",
    "proxy_port",
    "proxy_login",
    "proxy_password",
    "qos",
    "validate_server_cert",
)
CLIP_PARAMETERS = (
    "stream_options",
    "pre_duration",
    "post_duration",
    "create_folder",
    "filename",
    "max_file_size",
    "max_duration",
    "custom_params",
    *RECIPIENT_PARAMETERS,
)
# Parameters whose values are never printed (--dry-run, errors, logs).
SECRET_PARAMETERS = frozenset({"password", "proxy_password", "custom_params"})


class SoapFault(CameraFailure):
    """The event and action services refused ``operation`` (a SOAP 1.2 Fault)."""

    def __init__(self, operation: str, code: str, reason: str) -> None:
        super().__init__(f"{operation}: SOAP fault {code}: {reason}")
        self.operation = self.call = operation
        self.code = code
        self.reason = reason
        self.transient = False  # a refusal of what was sent, or a service the device lacks


@dataclass(frozen=True)
class Configuration:
    """A recipient or an action configuration on the camera."""

    configuration_id: str
    name: str
    template: str
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduledEvent:
    event_id: str
    name: str
    icalendar: str


@dataclass(frozen=True)
class ActionRule:
    rule_id: str
    name: str
    enabled: bool
    primary_action: str
    start_event_filter: str


def envelope(body: str) -> bytes:
    # tns1 and tnsaxis: the prefixes of the pulse's topic expression, declared for it.
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP}" xmlns:aa="{ACTION}" '
        f'xmlns:aev="{EVENT}" xmlns:wsnt="{WSNT}" xmlns:tns1="http://www.onvif.org/ver10/topics" '
        f'xmlns:tnsaxis="http://www.axis.com/2009/event/topics"><soap:Body>{body}</soap:Body></soap:Envelope>'
    ).encode()


def _parameters(values: dict[str, str], names: tuple[str, ...]) -> str:
    return "".join(f"<aa:Parameter Name={quoteattr(n)} Value={quoteattr(values.get(n, ''))}/>" for n in names)


def add_configuration(kind: str, name: str, template: str, values: dict[str, str]) -> str:
    """``kind``: "Recipient" or "Action"."""
    names = RECIPIENT_PARAMETERS if kind == "Recipient" else CLIP_PARAMETERS
    return (
        f"<aa:Add{kind}Configuration><aa:New{kind}Configuration><aa:Name>{escape(name)}</aa:Name>"
        f"<aa:TemplateToken>{escape(template)}</aa:TemplateToken>"
        f"<aa:Parameters>{_parameters(values, names)}</aa:Parameters>"
        f"</aa:New{kind}Configuration></aa:Add{kind}Configuration>"
    )


def add_pulse(name: str, interval_s: int) -> str:
    # Device local time; a pulse from the epoch every interval_s seconds.
    calendar = f"DTSTART:19700101T000000\nRRULE:FREQ=SECONDLY;INTERVAL={interval_s}"
    return (
        f"<aev:AddScheduledEvent><aev:NewScheduledEvent><aev:Name>{escape(name)}</aev:Name>"
        f'<aev:Schedule><aev:ICalendar Dialect="http://www.axis.com/vapix/ws/ical1">{escape(calendar)}'
        "</aev:ICalendar></aev:Schedule>"
        "</aev:NewScheduledEvent></aev:AddScheduledEvent>"
    )


def pulse_filter(event_id: str) -> str:
    return f'boolean(//SimpleItem[@Name="id" and @Value="{event_id}"])'


def add_rule(name: str, event_id: str, configuration_id: str) -> str:
    return (
        f"<aa:AddActionRule><aa:NewActionRule><aa:Name>{escape(name)}</aa:Name><aa:Enabled>true</aa:Enabled>"
        "<aa:StartEvent>"
        '<wsnt:TopicExpression Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">'
        f"{PULSE_TOPIC}</wsnt:TopicExpression>"
        '<wsnt:MessageContent Dialect="http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter">'
        f"{escape(pulse_filter(event_id))}</wsnt:MessageContent></aa:StartEvent>"
        f"<aa:PrimaryAction>{escape(configuration_id)}</aa:PrimaryAction>"
        "</aa:NewActionRule></aa:AddActionRule>"
    )


def remove(operation: str, id_element: str, identifier: str) -> str:
    p = "aev" if operation == "RemoveScheduledEvent" else "aa"
    return f"<{p}:{operation}><{p}:{id_element}>{escape(identifier)}</{p}:{id_element}></{p}:{operation}>"


def get(operation: str) -> str:
    prefix = "aev" if operation == "GetScheduledEvents" else "aa"
    return f"<{prefix}:{operation}/>"


def operation_of(body: str) -> str:
    """The operation a request body calls ('AddActionRule'), for error messages."""
    return body.split(">", 1)[0].lstrip("<").split(":", 1)[-1].split(" ", 1)[0].rstrip("/")


def check_fault(operation: str, root: ET.Element) -> None:
    fault = root.find(".//soap:Fault", _NS)
    if fault is None:
        return
    codes = [v.text or "" for v in fault.iterfind(".//soap:Value", _NS)]
    reason = fault.findtext(".//soap:Text", default="", namespaces=_NS)
    raise SoapFault(operation, " / ".join(c for c in codes if c) or "unknown", reason.strip())


def answer_text(root: ET.Element, element: str) -> str:
    """The text of the one element an Add* answer carries (ConfigurationID, EventID, RuleID)."""
    for found in root.iter():
        if found.tag.endswith("}" + element) and found.text:
            return found.text.strip()
    raise ValueError(f"no {element} in the answer")


def configurations(root: ET.Element, kind: str) -> list[Configuration]:
    found = []
    for item in root.iterfind(f".//aa:{kind}Configuration", _NS):
        parameters = {
            p.attrib.get("Name", ""): p.attrib.get("Value", "") for p in item.iterfind(".//aa:Parameter", _NS)
        }
        found.append(
            Configuration(
                configuration_id=item.findtext("aa:ConfigurationID", default="", namespaces=_NS),
                name=item.findtext("aa:Name", default="", namespaces=_NS),
                template=item.findtext("aa:TemplateToken", default="", namespaces=_NS),
                parameters=parameters,
            )
        )
    return found


def _local(element: ET.Element, name: str) -> str:
    """The text of the first descendant called ``name`` in any namespace."""
    found = next((e for e in element.iter() if e.tag.rsplit("}", 1)[-1] == name), None)
    return (found.text or "").strip() if found is not None else ""


def scheduled_events(root: ET.Element) -> list[ScheduledEvent]:
    """Every child of ScheduledEvents, whatever it is called: clients that read real
    answers do not name it, and ours are known by EventID and Name."""
    container = root.find(".//aev:ScheduledEvents", _NS)
    children = list(container) if container is not None else list(root.iterfind(".//aev:ScheduledEvent", _NS))
    return [
        ScheduledEvent(event_id=_local(item, "EventID"), name=_local(item, "Name"), icalendar=_local(item, "ICalendar"))
        for item in children
        if _local(item, "EventID")
    ]


def action_rules(root: ET.Element) -> list[ActionRule]:
    return [
        ActionRule(
            rule_id=item.findtext("aa:RuleID", default="", namespaces=_NS),
            name=item.findtext("aa:Name", default="", namespaces=_NS),
            enabled=(item.findtext("aa:Enabled", default="true", namespaces=_NS) or "").strip().lower() == "true",
            primary_action=item.findtext("aa:PrimaryAction", default="", namespaces=_NS),
            start_event_filter=item.findtext(".//wsnt:MessageContent", default="", namespaces=_NS),
        )
        for item in root.iterfind(".//aa:ActionRule", _NS)
    ]


def masked(values: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if k in SECRET_PARAMETERS and v else v) for k, v in values.items()}
