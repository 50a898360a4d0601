"""The millisecond layer under the camera emulator: answers in the shapes real AXIS
firmware gives, parsed by the very functions the VAPIX client uses, with no socket.

Every value here is our own; the shapes (element nesting, attribute order, namespace
prefixes, where a result or an error sits) are those captured from real devices and
published by others:

- disks/list.cgi, list.cgi, param.cgi: trunnion/vapix ``fixtures/recordings/*.json``
  (e.g. "ACCC8EF7DE6B v9.80.2.2": ``<root><disks numberofdisks="2"><disk .../>``);
- record/continuous/addconfiguration.cgi and its refusal: the Edge storage API, and the
  record.cgi/stop.cgi/remove.cgi answers captured with the result on a child of <root>
  (shared/vapix.md);
- action1/event1 SOAP: apljungquist/rs4acap ``crates/vapix/src/apis/services/action1/
  examples/*.xml`` (``SOAP-ENV`` prefix, a Sender fault with an ``aa:*Fault`` detail);
  GetScheduledEvents children read without naming them, as device-tested clients do
  (CamStreamer/CamStreamerLib ``src/VapixAPI.ts``);
- basicdeviceinfo.cgi: Kane610/axis ``tests/`` (``{"apiVersion", "data": {"propertyList"}}``);
- getNTPInfo: Cacsjep/oadm ``tests/Oadm.Core.Tests/Fixtures/Vapix/``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from relay.camera import soap
from relay.camera.answers import (
    CameraError,
    CameraFailure,
    continuous_profile,
    json_answer,
    parse_disk,
    recordings_page,
    request_time,
    xml_answer,
)
from relay.camera.check import credentials_readable

SOAP_ENV = "http://www.w3.org/2003/05/soap-envelope"


def envelope(inner: str) -> ET.Element:
    return ET.fromstring(
        f'<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" '
        f'xmlns:aa="{soap.ACTION}" xmlns:aev="{soap.EVENT}"><SOAP-ENV:Body>{inner}</SOAP-ENV:Body>'
        "</SOAP-ENV:Envelope>"
    )


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        # The refusal on a child of <root>, its error template's profile filled in.
        (
            b'<root><configure profile="1" result="ERROR" errormsg="Max number of recordings reached"/></root>',
            "Max number of recordings reached",
        ),
        (b'<?xml version="1.0"?><root><remove result="ERROR" errormsg="no such profile"/></root>', "no such profile"),
        (
            b"<ExportRecordingResponse><GeneralError><ErrorCode>110</ErrorCode>"
            b"<ErrorDescription>Recording not found</ErrorDescription></GeneralError></ExportRecordingResponse>",
            "recording not found",
        ),
        (b'<configure result="ERROR" errormsg="on the root itself"/>', "on the root itself"),
    ],
)
def test_an_error_anywhere_in_an_answer_is_the_cameras_refusal_with_its_message(raw: bytes, words: str) -> None:
    with pytest.raises(CameraError) as refused:
        xml_answer("cam-a", "record/continuous/addconfiguration.cgi", raw)
    assert words in refused.value.reason
    assert "nonsense" not in refused.value.reason


def test_a_profile_is_read_only_from_a_success() -> None:
    ok = xml_answer("cam-a", "addconfiguration.cgi", b'<root><configure profile="3" result="OK"/></root>')
    assert continuous_profile(ok) == "3"
    assert continuous_profile(ET.fromstring(b'<root><configure profile="3" result="ERROR"/></root>')) == ""


def test_list_cgi_pages_by_the_matches_not_every_recording_on_the_disk() -> None:
    root = xml_answer(
        "cam-a",
        "record/list.cgi",
        b'<root><recordings totalnumberofrecordings="812" numberofrecordings="2">'
        b'<recording diskid="SD_DISK" recordingid="20261201_101500_1A2B_ACCC8E000001" '
        b'starttime="2026-12-01T09:15:00.123456Z" starttimelocal="2026-12-01T10:15:00.123456+01:00" '
        b'stoptime="2026-12-01T09:20:00.654321Z" stoptimelocal="2026-12-01T10:20:00.654321+01:00" '
        b'recordingtype="continuous" eventid="continuous" eventtrigger="continuous" recordingstatus="completed" '
        b'source="1" locked="No"><video mimetype="video/x-h264" width="1920" height="1080" framerate="25:1"/>'
        b"</recording>"
        b'<recording diskid="SD_DISK" recordingid="20261201_102000_3C4D_ACCC8E000001" '
        b'starttime="2026-12-01T09:20:00.700000Z" stoptime="" recordingtype="continuous" '
        b'recordingstatus="recording" source="1" locked="No"/>'
        b"</recordings></root>",
    )
    recordings, matches = recordings_page(root, "SD_DISK")
    assert matches == 2
    assert [r.recording_id for r in recordings] == [
        "20261201_101500_1A2B_ACCC8E000001",
        "20261201_102000_3C4D_ACCC8E000001",
    ]
    assert recordings[0].starts == datetime(2026, 12, 1, 9, 15, 0, 123456, tzinfo=UTC)
    assert recordings[1].status == "recording"


def test_times_sent_are_whole_seconds_covering_the_range() -> None:
    moment = datetime(2026, 12, 2, 2, 39, 11, 250000, tzinfo=UTC)
    assert request_time(moment) == "2026-12-02T02:39:11Z"  # a start: floored
    assert request_time(moment, up=True) == "2026-12-02T02:39:12Z"  # a stop: ceiled
    whole = datetime(2026, 12, 2, 2, 39, 11, tzinfo=UTC)
    assert request_time(whole, up=True) == "2026-12-02T02:39:11Z"


def test_disks_in_the_captured_shape() -> None:
    root = xml_answer(
        "cam-a",
        "disks/list.cgi",
        b'<?xml version="1.0"?>\n<root xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        b'<disks numberofdisks="2" >  <disk diskid="SD_DISK" name="" totalsize="62000000" freesize="31000000" '
        b'cleanuplevel="99" cleanupmaxage="2" cleanuppolicy="fifo" locked="no" full="no" readonly="no" '
        b'status="OK" filesystem="ext4" group="S0"/>\n  <disk diskid="NetworkShare" totalsize="0" freesize="0" '
        b'cleanupmaxage="7" cleanuppolicy="fifo" full="no" status="disconnected" group="S1"/>\n</disks> </root>\n',
    )
    disks = [parse_disk(d) for d in root.iter("disk")]
    assert [(d.disk_id, d.usable, d.cleanup_max_age_days) for d in disks] == [
        ("SD_DISK", True, 2),
        ("NetworkShare", False, 7),
    ]


def test_json_answers_and_their_errors() -> None:
    info = json_answer(
        "cam-a",
        "basicdeviceinfo.cgi",
        b'{"apiVersion": "1.1", "context": "axis-relay", "method": "getAllProperties", "data": {"propertyList": '
        b'{"Brand": "AXIS", "ProdNbr": "M3106-L Mk II", "SerialNumber": "ACCC8E000001", "Version": "11.11.73"}}}',
    )
    assert info["propertyList"]["ProdNbr"] == "M3106-L Mk II"
    ntp = json_answer(
        "cam-a",
        "ntp.cgi",
        b'{"apiVersion": "1.2", "method": "getNTPInfo", "data": {"client": {"enabled": true, "synced": false, '
        b'"timeOffset": 0, "NTSEnabled": false}}}',
    )
    assert ntp["client"]["synced"] is False
    with pytest.raises(CameraError) as refused:
        json_answer("cam-a", "ntp.cgi", b'{"apiVersion": "1.2", "error": {"code": 2002, "message": "Not supported"}}')
    assert refused.value.code == 2002
    assert "Not supported" in refused.value.reason


def test_action_configurations_with_value_before_name_and_masked_secrets() -> None:
    root = envelope(
        "<aa:GetActionConfigurationsResponse><aa:ActionConfigurations><aa:ActionConfiguration>"
        "<aa:ConfigurationID>7</aa:ConfigurationID><aa:Name>axis-relay:cam-a:clip</aa:Name>"
        f"<aa:TemplateToken>{soap.CLIP_TEMPLATE}</aa:TemplateToken><aa:Parameters>"
        '<aa:Parameter Value="https://gw:8443/upload/cam-a" Name="upload_url"/>'
        '<aa:Parameter Value="********" Name="custom_params"/>'
        '<aa:Parameter Value="" Name="password"/>'
        "</aa:Parameters></aa:ActionConfiguration></aa:ActionConfigurations>"
        "</aa:GetActionConfigurationsResponse>"
    )
    [action] = soap.configurations(root, "Action")
    assert action.configuration_id == "7"
    assert action.parameters["upload_url"] == "https://gw:8443/upload/cam-a"
    assert not credentials_readable(action.parameters)
    assert credentials_readable({"custom_params": "accessToken=abc", "upload_url": "https://gw/upload/cam-a"})


def test_scheduled_events_whatever_their_children_are_called() -> None:
    root = envelope(
        "<aev:GetScheduledEventsResponse><aev:ScheduledEvents>"
        "<aev:ScheduledEvent><aev:EventID>11</aev:EventID><aev:Name>axis-relay:cam-a:pulse</aev:Name>"
        "<aev:Schedule><aev:ICalendar>DTSTART:19700101T000000&#10;RRULE:FREQ=SECONDLY;INTERVAL=15"
        "</aev:ICalendar></aev:Schedule></aev:ScheduledEvent>"
        "<aev:Event><aev:EventID>12</aev:EventID><aev:Name>axis-relay:cam-a:pulse</aev:Name></aev:Event>"
        "</aev:ScheduledEvents></aev:GetScheduledEventsResponse>"
    )
    events = soap.scheduled_events(root)
    assert [(e.event_id, e.name) for e in events] == [
        ("11", "axis-relay:cam-a:pulse"),
        ("12", "axis-relay:cam-a:pulse"),
    ]
    assert "INTERVAL=15" in events[0].icalendar


def test_soap_faults_from_the_sender_and_the_receiver() -> None:
    sender = envelope(
        "<SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:Sender</SOAP-ENV:Value></SOAP-ENV:Code>"
        '<SOAP-ENV:Reason><SOAP-ENV:Text xml:lang="en">the filter matches no event</SOAP-ENV:Text>'
        "</SOAP-ENV:Reason><SOAP-ENV:Detail><aa:InvalidConditionFilterFault/></SOAP-ENV:Detail></SOAP-ENV:Fault>"
    )
    with pytest.raises(soap.SoapFault) as fault:
        soap.check_fault("AddActionRule", sender)
    assert fault.value.call == "AddActionRule"
    assert "the filter matches no event" in fault.value.reason
    assert isinstance(fault.value, CameraFailure)
    assert fault.value.transient is False
    receiver = envelope(
        "<SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:Receiver</SOAP-ENV:Value><SOAP-ENV:Subcode>"
        "<SOAP-ENV:Value>ter:ActionNotSupported</SOAP-ENV:Value></SOAP-ENV:Subcode></SOAP-ENV:Code>"
        '<SOAP-ENV:Reason><SOAP-ENV:Text xml:lang="en">not supported</SOAP-ENV:Text></SOAP-ENV:Reason>'
        "</SOAP-ENV:Fault>"
    )
    with pytest.raises(soap.SoapFault) as fault:
        soap.check_fault("GetServiceCapabilities", receiver)
    assert "ter:ActionNotSupported" in fault.value.code


def test_camera_errors_share_one_base() -> None:
    error = CameraError("cam-a", "ntp.cgi", "unreachable", transient=True)
    assert isinstance(error, CameraFailure)
    assert (error.call, error.transient) == ("ntp.cgi", True)
