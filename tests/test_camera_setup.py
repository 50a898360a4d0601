"""`axis-relay camera check|setup|remove` against the emulated camera: SOAP recorded and
answered as documented, rules the camera acts on, faults on demand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.camera import check, setup, soap
from relay.camera.setup import Options
from relay.camera.vapix import VapixClient
from relay.cli import camera as commands
from relay.cli.errors import CliError
from relay.config import RelayConfig, parse_config
from relay.dev.local_s3 import LocalS3
from tests.support.backfill import add_owners_rule, backfill_config, camera_section
from tests.support.harness import DEVICE, TLS, TOKEN, axis_relay, list_keys, running_relay, wait_until, write_config
from tests.support.vapix_camera import CameraEmulator

NEW_TOKEN = "a-new-token-of-forty-characters-0123456789"
RELAY_ID = "gw-a"


def config(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator, **cam: Any
) -> RelayConfig:
    raw = backfill_config(tmp_path, tls, s3_server.endpoint_url, bucket, camera_section(camera, tls, **cam))
    raw["site"] = {"relay_id": RELAY_ID}
    return parse_config(raw, environ={})


def options(url: str = "https://127.0.0.1:1", **overrides: Any) -> Options:
    return Options(relay_url=url, **{"relay_id": RELAY_ID, **overrides})


async def test_setup_twice_replaces_and_never_duplicates(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    cfg = config(tmp_path, tls, s3_server, bucket, camera)
    await add_owners_rule(cfg)
    first, code = await commands.run_setup(cfg, DEVICE, options(), dry_run=False)
    assert code == 0, first
    assert "schedule 7 (every 15 s)" in first
    # Again, with a new token and interval: the camera ends up with the new values only.
    raw = backfill_config(tmp_path, tls, s3_server.endpoint_url, bucket, camera_section(camera, tls))
    raw["devices"][DEVICE]["token"] = NEW_TOKEN
    again, code = await commands.run_setup(parse_config(raw, environ={}), DEVICE, options(interval_s=30), dry_run=False)
    assert code == 0, again
    assert "(every 30 s)" in again
    s = camera.services
    [pulse] = [e for e in s.events.values() if e["name"].startswith("axis-relay:")]
    assert "INTERVAL=30" in pulse["icalendar"]
    ours = [c["name"] for c in (*s.recipients.values(), *s.actions.values(), *s.events.values(), *s.rules.values())]
    assert sorted(n for n in ours if n.startswith("axis-relay:")) == sorted(
        f"axis-relay:{RELAY_ID}:{DEVICE}:{part}" for part in ("recipient", "clip", "pulse", "rule")
    )
    assert {"motion to VMS", "nightly", "motion rule"} <= set(ours)  # left alone
    [clip] = [a for a in s.actions.values() if a["name"].startswith("axis-relay:")]
    p = clip["parameters"]
    assert p["upload_url"] == f"https://127.0.0.1:1/upload/{DEVICE}"
    assert p["custom_params"] == f"accessToken={NEW_TOKEN}"
    assert p["post_duration"] == "30000"
    assert p["validate_server_cert"] == "1"
    assert "%z" in p["filename"]
    assert "#s" in p["filename"]
    assert set(soap.CLIP_PARAMETERS) <= set(p)  # every parameter present, empty where unused
    assert len(s.continuous) == 1  # continuous recording turned on once
    assert camera.retention_days == 2  # raised from 1 day to 48 h


async def test_a_clip_reaches_s3_through_the_rule_setup_made(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    cfg = config(tmp_path, tls, s3_server, bucket, camera)
    async with running_relay(cfg, tls) as relay:
        url = relay.listening.ingest[0]
        text, code = await commands.run_setup(
            cfg, DEVICE, options(url, interval_s=1, post_ms=1000, wait_s=30), dry_run=False
        )
        assert code == 0, text
        assert "OK" in text
        assert "end-to-end: the camera's first clip reached the relay" in text

        async def a_clip_in_s3() -> bool:
            return any(k.startswith(f"{DEVICE}/") and k.endswith(".mkv") for k in await list_keys(s3, bucket))

        await wait_until(a_clip_in_s3, timeout=30, what="a clip sent by the camera's new rule, in S3")
    assert camera.services.pushes
    assert camera.services.pushes[0][0] == "200"
    name = camera.services.pushes[0][1]
    assert name.startswith(f"{DEVICE}_")
    assert name.endswith(".mkv")
    # The check after set-up saw this relay, these credentials, an enabled rule.
    assert "recipient" in text
    assert "credentials" in text
    assert "rule" in text


async def test_setup_says_when_no_clip_arrives(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    # The camera's rule points at a relay that is not there: set-up must not call that OK.
    cfg = config(tmp_path, tls, s3_server, bucket, camera)
    text, code = await commands.run_setup(cfg, DEVICE, options(interval_s=1, wait_s=3), dry_run=False)
    assert code == 1
    assert "no clip from cam-entrance reached the relay within 3 s" in text
    assert "fix:" in text


async def test_remove_takes_away_only_what_setup_made(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    cfg = config(tmp_path, tls, s3_server, bucket, camera)
    await add_owners_rule(cfg)
    await commands.run_setup(cfg, DEVICE, options(), dry_run=False)
    text, code = await commands.run_remove(cfg, DEVICE)
    assert code == 0, text
    s = camera.services
    names = {c["name"] for c in (*s.recipients.values(), *s.actions.values(), *s.events.values(), *s.rules.values())}
    assert names == {"motion to VMS", "nightly", "motion rule"}
    assert len(s.continuous) == 1  # footage protection stays
    assert (await commands.run_remove(cfg, DEVICE))[0].endswith("nothing of axis-relay's was on the camera")


async def test_a_soap_fault_mid_setup_is_rolled_back_and_named(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    cfg = config(tmp_path, tls, s3_server, bucket, camera)
    await commands.run_setup(cfg, DEVICE, options(), dry_run=False)
    before = {k: dict(v) for k, v in camera.services.actions.items()}
    camera.services.fault_on = "AddActionRule"
    text, code = await commands.run_setup(cfg, DEVICE, options(interval_s=30), dry_run=False)
    assert code == 1
    assert "AddActionRule" in text
    assert "rolled back" in text
    assert "the camera is as it was" in text
    assert camera.services.actions == before  # the earlier set-up is intact, the half-new one gone
    assert len(camera.services.rules) == 1
    assert len(camera.services.events) == 1
    assert TOKEN not in text


async def test_dry_run_changes_nothing_and_masks_secrets(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    raw = backfill_config(tmp_path, tls, s3_server.endpoint_url, bucket, camera_section(camera, tls))
    path = write_config(tmp_path / "relay.toml", raw)
    before = camera.services.changed()
    code, out, err = await axis_relay(
        "camera", "setup", DEVICE, "--dry-run", "--relay-url", "https://gw:8443", "--config", str(path)
    )
    assert code == 0, err
    assert "AddActionConfiguration" in out
    assert "AddActionRule" in out
    assert "https://gw:8443/upload/" in out
    assert TOKEN not in out
    assert "***" in out
    assert camera.services.changed() == before
    assert camera.services.operations == []  # not a single SOAP call
    # Bad input: a clear error, exit 2, nothing sent.
    code, _, err = await axis_relay("camera", "setup", "cam-nope", "--relay-url", "https://gw", "--config", str(path))
    assert code == 2
    assert "no device 'cam-nope'" in err
    code, _, err = await axis_relay("camera", "setup", DEVICE, "--config", str(path))
    assert code == 2
    assert "ingest.public_url" in err
    assert camera.services.operations == []


@pytest.mark.parametrize(
    ("fault", "line", "words"),
    [
        ("no card", "SD card", "no SD_DISK"),
        ("clock", "time synced", "not synced"),
        ("password", "authentication", "wrong username or password"),
    ],
)
async def test_check_names_what_needs_attention(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator, fault: str, line: str, words: str
) -> None:
    overrides: dict[str, Any] = {}
    if fault == "no card":
        camera.disk_status = None
    elif fault == "clock":
        camera.ntp_synced, camera.clock_offset_s = False, 300.0
    else:
        overrides["password"] = "not-the-password"
    cfg = config(tmp_path, tls, s3_server, bucket, camera, **overrides)
    text, code = await commands.run_check(cfg, [DEVICE], "https://127.0.0.1:1", as_json=False)
    assert code == 1
    [failing] = [x for x in text.splitlines() if x.strip().startswith("FAIL") and line in x]
    assert words in failing or words in text
    assert "fix:" in text
    assert "not-the-password" not in text
    assert camera.services.changed() == (0, 0, 0, 0, 0, "")  # check changes nothing


async def test_check_finds_a_camera_sending_a_stale_token(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    cfg = config(tmp_path, tls, s3_server, bucket, camera)
    await commands.run_setup(cfg, DEVICE, options(), dry_run=False)
    [clip] = [a for a in camera.services.actions.values() if a["name"].startswith("axis-relay:")]
    clip["parameters"]["custom_params"] = "accessToken=an-old-token"  # rotated in the config, not on the camera
    text, code = await commands.run_check(cfg, [DEVICE], "https://127.0.0.1:1", as_json=False)
    assert code == 1
    assert any(x.strip().startswith("FAIL credentials") for x in text.splitlines()), text


async def test_check_is_all_ok_after_setup_and_says_so_as_json(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    cfg = config(tmp_path, tls, s3_server, bucket, camera)
    await commands.run_setup(cfg, DEVICE, options(), dry_run=False)
    import json

    text, code = await commands.run_check(cfg, [], "https://127.0.0.1:1", as_json=True)
    [report] = json.loads(text)
    assert code == 0, text
    assert report["ok"] is True
    what = {line["what"] for line in report["lines"]}
    assert {"reachable", "authentication", "device", "time synced", "SD card", "retention"} <= what
    assert {"continuous recording", "recipient", "credentials", "rule", "relay certificate"} <= what


async def test_a_hashed_token_is_refused_before_anything_is_sent(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    from relay.ingest.secret_hash import hash_secret

    raw = backfill_config(tmp_path, tls, s3_server.endpoint_url, bucket, camera_section(camera, tls))
    raw["devices"][DEVICE]["token"] = hash_secret(TOKEN)
    cfg = parse_config(raw, environ={})
    with pytest.raises(CliError, match=f"AXIS_RELAY_DEVICE_{DEVICE.upper().replace('-', '_')}_TOKEN"):
        await commands.run_setup(cfg, DEVICE, options(), dry_run=False)
    assert camera.services.operations == []


async def test_a_camera_that_refuses_the_continuous_recording_is_named_with_its_own_words(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    """One continuous profile per device: a camera already recording to a network share
    refuses a second for the card, its error template carrying a profile number. That
    must read as the camera's refusal, never as "turned on (profile 1)"."""
    camera.services.continuous["1"] = {"diskid": "NetworkShare", "options": "camera=1"}
    cfg = config(tmp_path, tls, s3_server, bucket, camera)
    text, code = await commands.run_setup(cfg, DEVICE, options(wait_s=0.0), dry_run=False)
    assert code == 1, text
    assert "the camera refused: The maximum number of continuous recordings is reached" in text
    assert "turned on" not in text
    assert "nonsense" not in text


async def test_setup_sends_documented_stream_options_and_takes_the_configured_ones(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    cfg = config(tmp_path, tls, s3_server, bucket, camera)
    await commands.run_setup(cfg, DEVICE, options(wait_s=0.0), dry_run=False)
    assert camera.services.continuous["1"]["options"] == "camera=1"  # never empty: the API requires them
    camera.services.continuous.clear()
    cfg = config(tmp_path, tls, s3_server, bucket, camera, stream_options="camera=1&resolution=1280x720&fps=15")
    await commands.run_setup(cfg, DEVICE, options(wait_s=0.0), dry_run=False)
    assert camera.services.continuous["1"]["options"] == "camera=1&resolution=1280x720&fps=15"


async def test_a_renamed_scheduled_event_child_still_leaves_no_old_pulse_behind(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    camera.services.scheduled_event_tag = "Event"  # a firmware that names the children otherwise
    cfg = config(tmp_path, tls, s3_server, bucket, camera)
    for _ in range(3):
        text, code = await commands.run_setup(cfg, DEVICE, options(wait_s=0.0), dry_run=False)
        assert code == 0, text
    assert len(camera.services.events) == 1, camera.services.events
    assert len([a for a in camera.services.actions.values() if a["name"].startswith("axis-relay:")]) == 1


async def test_check_on_a_camera_that_masks_secrets_takes_a_clip_that_logged_in_as_proof(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    camera.services.masks_secrets = True
    cfg = config(tmp_path, tls, s3_server, bucket, camera)
    await commands.run_setup(cfg, DEVICE, options(wait_s=0.0), dry_run=False)
    text, code = await commands.run_check(cfg, [DEVICE], "https://127.0.0.1:1", as_json=False)
    assert code == 1
    [line] = [x for x in text.splitlines() if "credentials" in x]
    assert "cannot be read back (the camera masks them); no clip from it yet" in line
    assert "stale" not in text
    assert "press Test" in text
    async with running_relay(cfg, tls) as relay:
        assert (await relay.device.post_clip(f"/upload/{DEVICE}?accessToken={TOKEN}", b"x" * 1000)).status == 200
        await wait_until(lambda: relay.stats.clips_uploaded == 1, what="the clip in the ledger")
    text, code = await commands.run_check(cfg, [DEVICE], "https://127.0.0.1:1", as_json=False)
    [line] = [x for x in text.splitlines() if "credentials" in x]
    assert code == 0, text
    assert f"cannot be read back (the camera masks them); the last clip from {DEVICE} logged in:" in line


async def test_check_json_is_one_document_while_the_camera_expires_nonces(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    import json

    camera.nonce_max_uses = 2  # every third answer says stale=true
    raw = backfill_config(tmp_path, tls, s3_server.endpoint_url, bucket, camera_section(camera, tls))
    raw["log"] = {"level": "debug"}  # the nonce line is written, to stderr
    path = write_config(tmp_path / "relay.toml", raw)
    _, out, err = await axis_relay(
        "camera", "check", "--json", "--relay-url", "https://127.0.0.1:1", "--config", str(path)
    )
    assert camera.stale_answers > 0
    [report] = json.loads(out)  # the whole of stdout is one JSON document
    assert report["camera"] == DEVICE
    assert "camera_nonce_stale" in err
    assert "camera_nonce_stale" not in out


async def test_two_relays_set_up_one_camera_side_by_side_and_each_replaces_only_its_own(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    """A pair (#26): gw-a and gw-b each set the camera up; it holds two recipients, two
    actions, two schedules and two rules of ours, the installer's rule untouched; setting
    gw-a up again replaces gw-a's only; an earlier version's unnamed set-up pointing at
    gw-a is taken as gw-a's, not gw-b's."""
    url = {"gw-a": "https://10.0.0.1:8443", "gw-b": "https://10.0.0.2:8443"}
    configs = {}
    for me, other in (("gw-a", "gw-b"), ("gw-b", "gw-a")):
        raw = backfill_config(tmp_path, tls, s3_server.endpoint_url, bucket, camera_section(camera, tls))
        raw["site"] = {"relay_id": me, "peers": [url[other]]}
        raw["ingest"]["public_url"] = url[me]
        configs[me] = parse_config(raw, environ={})
    await add_owners_rule(configs["gw-a"])
    # What a version before relay ids left, pointing at gw-a.
    legacy = Options(relay_url=url["gw-a"], relay_id="x")
    legacy_plan = setup.plan(DEVICE, configs["gw-a"].devices[DEVICE], legacy)
    camera_config = configs["gw-a"].devices[DEVICE].camera
    assert camera_config is not None
    async with VapixClient.open(DEVICE, camera_config) as client:
        values = {**legacy_plan.recipient}
        await client.soap(
            soap.add_configuration("Recipient", f"axis-relay:{DEVICE}:recipient", soap.RECIPIENT_TEMPLATE, values)
        )
    s = camera.services

    def ours() -> list[str]:
        every = (*s.recipients.values(), *s.actions.values(), *s.events.values(), *s.rules.values())
        return sorted(c["name"] for c in every if c["name"].startswith("axis-relay:"))

    for me in ("gw-b", "gw-a", "gw-a"):  # gw-a twice: the second replaces the first
        text, _ = await commands.run_setup(configs[me], DEVICE, options(url[me], relay_id=me), dry_run=False)
        assert "set-up failed" not in text, text
        # The unnamed set-up points at gw-a: gw-b's set-up leaves it, gw-a's replaces it.
        assert (f"axis-relay:{DEVICE}:recipient" in ours()) == (me == "gw-b")
    assert ours() == sorted(
        f"axis-relay:{me}:{DEVICE}:{part}" for me in ("gw-a", "gw-b") for part in ("recipient", "clip", "pulse", "rule")
    )
    assert len(s.recipients) == len([r for r in s.rules.values() if r["name"].startswith("axis-relay:")]) == 2
    targets = sorted(a["parameters"]["upload_url"] for a in s.actions.values() if a["name"].startswith("axis-relay:"))
    assert targets == [f"{url['gw-a']}/upload/{DEVICE}", f"{url['gw-b']}/upload/{DEVICE}"]
    assert {"motion to VMS", "nightly", "motion rule"} <= {
        c["name"] for c in (*s.actions.values(), *s.events.values(), *s.rules.values())
    }
    # camera check on gw-b shows both: its own recipient and rule, and its peer's.
    report = await check.check(DEVICE, configs["gw-b"].devices[DEVICE], url["gw-b"], peers=[url["gw-a"]])
    lines = {line.what: line for line in report.lines}
    assert lines["recipient"].value.startswith(f"{url['gw-b']}/upload/{DEVICE}")
    assert lines["peer recipient"].ok, lines["peer recipient"]
    assert f"{url['gw-a']}/upload/{DEVICE}" in lines["peer recipient"].value
    # gw-b removes what is its own, and the camera still sends to gw-a.
    text, code = await commands.run_remove(configs["gw-b"], DEVICE)
    assert code == 0, text
    assert ours() == sorted(f"axis-relay:gw-a:{DEVICE}:{part}" for part in ("recipient", "clip", "pulse", "rule"))
    report = await check.check(DEVICE, configs["gw-a"].devices[DEVICE], url["gw-a"], peers=[url["gw-b"]])
    peer_line = next(line for line in report.lines if line.what == "peer recipient")
    assert not peer_line.ok
    assert peer_line.fix == f"run 'axis-relay camera setup {DEVICE}' on the relay at {url['gw-b']}"
