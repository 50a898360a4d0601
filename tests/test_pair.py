"""Two gateways per site, with S3 as the only coordinator (#26): each clip once in S3,
back-fill by one relay at a time through leases in the bucket, and what each relay says
about its peer. Real relay processes, the test S3 (SeaweedFS, which honours
``If-None-Match: *``), the emulated camera set up by `camera setup` on each relay."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from relay.backfill.gaps import Span, missing_seconds
from relay.camera.setup import FILENAME_TEMPLATE as SETUP_FILENAMES
from relay.config import ConfigError, S3Config, parse_config
from relay.coverage.bucket import read_bucket
from relay.coverage.survey import layouts
from relay.dev.local_s3 import LocalS3, free_port
from relay.ops.stats import PairStatus, PeerStatus
from relay.pair.leases import LAG, LEAD, Leases
from relay.pair.split import primary_of
from tests.support.backfill import (
    FAST_BACKFILL,
    OWNERS,
    add_owners_rule,
    backfill_config,
    camera_section,
    wait_for_footage,
)
from tests.support.faultproxy import Faults, in_front_of
from tests.support.footage import frames_between
from tests.support.harness import (
    DEVICE,
    TLS,
    axis_relay,
    healthz,
    http_get,
    metric,
    object_bytes,
    raw_config,
    s3_client,
    wait_until,
    write_config,
)
from tests.support.relay_process import RelayProcess, relay_process
from tests.support.vapix_camera import CameraEmulator

# ----- the split, and the config (no server) ----------------------------------------


def test_the_split_is_the_same_on_both_relays_stable_and_shared() -> None:
    a, b = "https://gw-a.local:8443", "https://gw-b.local:8443"
    cameras = [f"cam-{n:03d}" for n in range(200)]
    split = {c: primary_of(c, (a, b)) for c in cameras}
    assert split == {c: primary_of(c, (b, a)) for c in cameras}  # each relay lists itself first
    assert 80 <= sum(url == a for url in split.values()) <= 120  # shared about evenly
    # A third camera added changes no other camera's primary.
    assert {c: primary_of(c, (a, b)) for c in cameras} == split


def test_a_pair_config_names_what_it_needs(tmp_path: Path, tls: TLS) -> None:
    def refused(**sections: Any) -> str:
        raw = raw_config(tmp_path, tls, "https://127.0.0.1:1", "clips", **sections)
        with pytest.raises(ConfigError) as caught:
            parse_config(raw, environ={})
        return str(caught.value)

    peer = {"peers": ["https://gw-b.local:8443"]}
    assert "set ingest.public_url" in refused(site=peer)
    assert "this relay's own ingest.public_url" in refused(
        site={"peers": ["https://gw-a.local:8443"]}, ingest={"public_url": "https://gw-a.local:8443"}
    )
    assert "{clip_id} differs between the two relays" in refused(
        site=peer, ingest={"public_url": "https://gw-a.local:8443"}, s3={"key_template": "{camera}/{clip_id}.mkv"}
    )
    assert "site.peers: a pair has" not in refused(site={"peers": ["gw-b"]})  # one URL form for all
    assert "the other relay's URL as cameras reach it" in refused(site={"peers": ["gw-b"]})
    assert "site.relay_id" in refused(site={"relay_id": "gw:a"})
    assert "ha.lease_slot_s" in refused(ha={"lease_slot_s": 1})
    raw = raw_config(
        tmp_path, tls, "https://127.0.0.1:1", "clips", site=peer, ingest={"public_url": "https://gw-a:8443"}
    )
    raw["destination"] = "apigw"
    raw["apigw"] = {"url": "https://x.execute-api.eu-west-1.amazonaws.com/prod"}
    with pytest.raises(ConfigError, match='two gateways coordinate through S3; set destination = "s3"'):
        parse_config(raw, environ={})


# ----- leases, against the test S3 ----------------------------------------------------


def pair_status(relay_id: str) -> PairStatus:
    return PairStatus(relay_id, f"https://{relay_id}:8443", PeerStatus("https://peer:8443", "k"))


@contextlib.asynccontextmanager
async def keeping(leases: Leases) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(leases.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_one_relay_holds_a_lease_while_it_lives_and_the_other_takes_it_within_a_slot(
    s3_server: LocalS3, tls: TLS, bucket: str, s3: Any
) -> None:
    slot = 2.0
    a, b = pair_status("gw-a"), pair_status("gw-b")
    async with s3_client(s3_server.endpoint_url, tls) as client_a, s3_client(s3_server.endpoint_url, tls) as client_b:
        leases_a = Leases(client_a, bucket, "_axis-relay/", a, [DEVICE], slot)
        leases_b = Leases(client_b, bucket, "_axis-relay/", b, [DEVICE], slot)
        async with keeping(leases_a) as task_a:
            await wait_until(lambda: leases_a.held(DEVICE), what="A holding the lease it found free")
            async with keeping(leases_b):
                # Three slot changes: A keeps it each time (it tries first), and B never
                # holds it at the same time.
                first = leases_a.slot_at(time.time())
                exclusive = True

                def three_slots_on() -> bool:
                    nonlocal exclusive
                    exclusive &= not (leases_a.held(DEVICE) and leases_b.held(DEVICE))
                    return leases_a.slot_at(time.time()) >= first + 3

                requests = a.lease_requests + b.lease_requests
                await wait_until(three_slots_on, timeout=15, what="three slots")
                assert exclusive
                # Per slot: A creates one key, B tries and reads once.
                assert a.lease_requests + b.lease_requests - requests <= 3 * 3 + 3
                assert leases_a.held(DEVICE)
                assert b.lease_holder[DEVICE] == "gw-a"
                assert a.lease_moves == b.lease_moves == 0
                # A dies (its task cancelled, as a SIGKILL ends it): B takes over within a slot.
                task_a.cancel()
                died = time.time()
                await wait_until(lambda: leases_b.held(DEVICE), timeout=3 * slot, what="B taking the lease over")
                moved_after = time.time() - died
    assert moved_after <= slot + 1.0
    assert b.lease_moves == 1
    assert b.lease_holder[DEVICE] == "gw-b"
    listed = await s3.list_objects_v2(Bucket=bucket, Prefix=f"_axis-relay/lease/{DEVICE}/")
    holders = [json.loads(await object_bytes(s3, bucket, o["Key"]))["relay"] for o in listed["Contents"]]
    # One key per slot, each naming its one holder: gw-a's, then gw-b's from the takeover on.
    assert holders == sorted(holders), holders
    assert (holders[0], holders[-1]) == ("gw-a", "gw-b"), holders


# ----- two relay processes, one camera, one bucket -------------------------------------

INTERVAL = 2  # the pulse `camera setup --interval` makes: a clip every 2 s
HA = {"peer_delay_s": 2, "peer_silent_s": 6, "heartbeat_s": 2, "lease_slot_s": 6}
KILLED_S = 60.0


def pair_config(
    directory: Path, tls: TLS, s3_url: str, bucket: str, camera: CameraEmulator, me: str, ports: dict[str, int]
) -> Path:
    """Relay ``me`` of the pair gw-a/gw-b: its own spool and ports, the other as its peer."""
    peer = "gw-b" if me == "gw-a" else "gw-a"
    directory.mkdir()
    raw = backfill_config(
        directory,
        tls,
        s3_url,
        bucket,
        camera_section(camera, tls, cadence_s=INTERVAL),
        site={"relay_id": me, "peers": [f"https://127.0.0.1:{ports[peer]}"]},
        ingest={"port": ports[me], "public_url": f"https://127.0.0.1:{ports[me]}"},
        metrics={"port": ports[f"{me} metrics"]},
        ha=HA,
        audit={"enabled": False},
    )
    raw["devices"][DEVICE]["filename_template"] = SETUP_FILENAMES.format(device=DEVICE)
    return write_config(directory / "relay.toml", raw)


async def device_objects(s3: Any, bucket: str, window: Span) -> list[Any]:
    reading = await read_bucket(s3, bucket, layouts(S3Config(bucket=bucket)), DEVICE, window)
    return [o for o in reading.objects if o.span is not None]


async def stored_bytes(s3: Any, bucket: str) -> dict[str, int]:
    """Every object of the camera (its clips and back-fill's) and its size."""
    listed = await s3.list_objects_v2(Bucket=bucket, Prefix=f"{DEVICE}/")
    return {o["Key"]: int(o["Size"]) for o in listed.get("Contents", [])}


async def lease_requests(*relays: RelayProcess) -> float:
    """The S3 requests the relays made for leases, as their metrics count them."""
    total = 0.0
    for relay in relays:
        total += metric((await http_get(relay.metrics_url + "/metrics"))[1], "axis_relay_lease_requests_total")
    return total


async def no_open_gaps(*relays: RelayProcess) -> bool:
    """No relay has a gap in the camera's footage still to fill, as its metrics say."""
    for relay in relays:
        text = (await http_get(relay.metrics_url + "/metrics"))[1]
        for line in text.splitlines():
            still_open = line.startswith("axis_relay_gaps{") and not re.search(r'state="(filled|unfillable)"', line)
            if still_open and float(line.rsplit(" ", 1)[1]) > 0:
                return False
    return True


@dataclass
class Settled:
    """A moment of the steady state when no clip was on its way to S3."""

    at: datetime
    stored: dict[str, int]  # the camera's objects in S3 and their sizes
    uplink: int  # the bytes both relays had sent towards S3
    pushes: int  # the camera's pushes so far (one per relay per pulse)


async def settled(
    s3: Any, bucket: str, primary: RelayProcess, meters: dict[str, Faults], camera: CameraEmulator
) -> Settled:
    """Wait for a moment when the camera's primary holds no clip and neither relay sends
    anything to S3 while the bucket is listed: every clip pushed so far is in the listing,
    and no upload straddles it (a busy machine can make uploads lag by a pulse or two, so
    a moment picked by the clock alone may not be one)."""
    found: list[Settled] = []

    def uplink() -> int:
        return sum(m.upstream_bytes for m in meters.values())

    async def quiet() -> bool:
        sent, pushes = uplink(), len(camera.services.pushes)
        held = metric((await http_get(primary.metrics_url + "/metrics"))[1], "axis_relay_spool_clips")
        stored = await stored_bytes(s3, bucket)
        if held == 0 and uplink() == sent and len(camera.services.pushes) == pushes:
            found.append(Settled(camera.now(), stored, sent, pushes))
        return bool(found)

    await wait_until(quiet, timeout=30, what="a moment with no clip on its way to S3")
    return found[0]


@pytest.mark.long
@pytest.mark.timeout(420)
async def test_a_pair_stores_every_clip_once_and_covers_each_relay_dying_in_turn(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    camera.frame_bytes = 40_000  # 3.2 Mbit/s: a 2 s clip is 800 kB
    camera.record(camera.now() - timedelta(minutes=1))
    ports = {name: free_port() for name in ("gw-a", "gw-b", "gw-a metrics", "gw-b metrics")}
    meters = {"gw-a": Faults(), "gw-b": Faults()}
    async with (
        in_front_of(s3_server.endpoint_url, meters["gw-a"]) as proxy_a,
        in_front_of(s3_server.endpoint_url, meters["gw-b"]) as proxy_b,
    ):
        config_a = pair_config(tmp_path / "a", tls, proxy_a.endpoint_url, bucket, camera, "gw-a", ports)
        config_b = pair_config(tmp_path / "b", tls, proxy_b.endpoint_url, bucket, camera, "gw-b", ports)
        async with (
            relay_process(config_a, tls.client_context()) as a,
            relay_process(config_b, tls.client_context()) as b,
        ):
            await add_owners_rule(parse_config(tomllib.loads(config_a.read_text()), environ={}))
            for config in (config_a, config_b):
                code, out, err = await axis_relay(
                    "camera", "setup", DEVICE, "--config", str(config), "--interval", str(INTERVAL), "--no-wait"
                )
                assert code in (0, 1), err  # 1 on the first: the peer's recipient is not there yet
            code, out, _ = await axis_relay("camera", "check", DEVICE, "--config", str(config_a))
            assert code == 0, out
            assert f"peer recipient        https://127.0.0.1:{ports['gw-b']}/upload/{DEVICE}" in out
            services = camera.services
            for kind, part in (
                (services.recipients, "recipient"),
                (services.actions, "clip"),
                (services.rules, "rule"),
            ):
                ours = sorted(c["name"] for c in kind.values() if c["name"].startswith("axis-relay:"))
                assert ours == [f"axis-relay:{me}:{DEVICE}:{part}" for me in ("gw-a", "gw-b")]
            every = (*services.actions.values(), *services.events.values(), *services.rules.values())
            assert {c["name"] for c in every} >= OWNERS  # the owner's rule, untouched

            # ----- steady state: every clip once, the uplink carries it about once
            await wait_until(lambda: len(services.pushes) >= 6, timeout=20, what="both rules pushing")
            _, report = await healthz(a.metrics_url)
            primary = a if report["pair"]["cameras"][DEVICE]["primary"] == "gw-a" else b

            # The relays' start-up back-fill (the seconds before each one's first clip, each
            # fetched or found by the lease holder) done first: the window is the steady state.
            await wait_until(lambda: no_open_gaps(a, b), timeout=60, what="the relays' start-up back-fill")
            opening = await settled(s3, bucket, primary, meters, camera)
            leases = await lease_requests(a, b)
            await asyncio.sleep(10 * INTERVAL)  # the steady state runs: ten pulses
            closing = await settled(s3, bucket, primary, meters, camera)
            leases = await lease_requests(a, b) - leases
            begin, end = opening.at, closing.at
            uplink = closing.uplink - opening.uplink
            new = {k: v for k, v in closing.stored.items() if k not in opening.stored}
            pulses = (closing.pushes - opening.pushes) / 2  # each pulse pushes to both relays
            assert pulses >= 9, services.pushes
            # One object per pulse (a pulse half pushed at either end may count or not).
            assert abs(len(new) - pulses) <= 1, (pulses, sorted(new))
            assert len({k.rsplit("/", 1)[-1].split("_")[0] for k in new}) == len(new), sorted(new)
            assert not [k for k in new if "~" in k or "/backfill/" in k]
            steady_ratio = uplink / sum(new.values())
            assert steady_ratio <= 1.02, (uplink, sum(new.values()))
            by_peer = sum(len(r.named("clip_delivered_by_peer")) for r in (a, b))
            assert by_peer >= 9  # the secondary found each of the primary's clips
            said = [(await http_get(r.metrics_url + "/metrics"))[1] for r in (a, b)]
            series = f'{{device="{DEVICE}"}}'
            counted = sum(metric(t, f"axis_relay_clips_delivered_by_peer_total{series}") for t in said)
            # What the metrics say is what the log says (a clip may come between the two reads).
            assert by_peer <= counted <= sum(len(r.named("clip_delivered_by_peer")) for r in (a, b))
            assert sorted(metric(t, f"axis_relay_backfill_lease_held{series}") for t in said) == [0, 1]

            # ----- a clip the camera's buffer loses reaches neither relay: both find the
            # gap, one fetches it (the lease holder), the other finds it in S3
            lost = (camera.now().timestamp() // INTERVAL + 2) * INTERVAL
            services.lost_pulses.add(lost)
            at = datetime.fromtimestamp(lost, UTC)
            await wait_for_footage(
                s3, bucket, DEVICE, set(frames_between(at, at + timedelta(seconds=INTERVAL), snap_to_key=False))
            )

            # ----- the camera's primary ("A") dies for 60 s: the secondary ("B") stores
            # everything, and says its peer is silent. (Named by role, not by id: so B
            # holds a clip back when it dies in turn, as a secondary does.)
            first, second = (a, b) if primary is a else (b, a)
            ids = {a: "gw-a", b: "gw-b"}
            await first.kill()
            killed_first = time.time()

            async def second_says_peer_silent() -> bool:
                _, report = await healthz(second.metrics_url)
                return "peer_silent" in [r["code"] for r in report["reasons"]]

            await wait_until(second_says_peer_silent, timeout=30, what="the live relay naming its silent peer")
            code, out, _ = await axis_relay("status", "--config", str(second.config_path))
            assert code == 1, out  # degraded: clips still reach S3, through the live relay
            assert "peer_silent" in out
            assert f"{ids[first]} at https://127.0.0.1:{ports[ids[first]]}: UNREACHABLE" in out
            # Per camera: who uploads it first, who holds its lease, when the peer last stored one.
            assert re.search(rf"{DEVICE} +primary {ids[first]}, lease gw-[ab], peer stored \d+ s ago", out), out
            _, page = await http_get(second.metrics_url + "/")
            assert "data-reachable='false'" in page
            assert "Two gateways" in page
            await asyncio.sleep(max(0.0, killed_first + KILLED_S - time.time()))

            # ----- then B dies for 60 s with a clip held back, and A comes back (a few
            # clips reach neither); B, back, finds that time fetched and stores it no more
            await second.kill()
            killed_second = time.time()
            taken = second.named("lease_taken")  # a start clears a process's events: kept here
            await first.start()
            await asyncio.sleep(max(0.0, killed_second + KILLED_S - time.time()))
            await second.start()
            back = camera.now()

            # ----- S3 holds all of the camera's time, once
            window = Span(begin, back + timedelta(seconds=3 * INTERVAL))

            async def all_time_in_s3() -> bool:
                return (
                    camera.now() > window.ends
                    and missing_seconds(window, [o.span for o in await device_objects(s3, bucket, window)]) == 0
                )

            await wait_until(all_time_in_s3, timeout=90, what="every second of the camera's time in S3")
            for relay in (a, b):

                async def drained(r: RelayProcess = relay) -> bool:
                    text = (await http_get(r.metrics_url + "/metrics"))[1]
                    return metric(text, "axis_relay_spool_clips") <= 1  # at most this pulse's

                await wait_until(drained, timeout=30, what="both spools drained")
            # Everything of the camera in the bucket, the relays' first minutes included
            # (each fetched the time before its first clip: only the lease holder may).
            objects = await device_objects(s3, bucket, Span(window.starts - timedelta(minutes=10), window.ends))
            keys = [o.key for o in objects]
            assert not [k for k in keys if "~" in k], keys  # no clip kept apart as a second copy
            device = [(o.starts, o.ends) for o in objects if o.origin == "device"]
            assert len(device) == len(set(device)), "a device clip stored twice"
            spans = sorted((o.starts, o.ends, o.key) for o in objects)
            margin = timedelta(seconds=FAST_BACKFILL["margin_s"] + 1)  # a piece widens to whole seconds
            for (_, ends, k1), (starts, _, k2) in itertools.pairwise(spans):
                assert ends - starts <= margin, (k1, k2)
            assert [k for k in keys if "/backfill/" in k], "the time neither relay received, fetched back"
            # The camera was asked for each moment once: by one relay at a time.
            exports = sorted((starts, stops) for _, starts, stops, _ in camera.exports)
            for (_, stops), (starts, _) in itertools.pairwise(exports):
                assert stops - starts <= margin, exports
            taken += first.named("lease_taken") + second.named("lease_taken")
            total_uplink = meters["gw-a"].upstream_bytes + meters["gw-b"].upstream_bytes
            total_stored = sum((await stored_bytes(s3, bucket)).values())
            # The lease moves at the first slot its dead holder had not claimed yet: within a
            # slot, plus the holder's lead and the other's lag (relay.pair.leases).
            moves = [
                round(datetime.fromisoformat(e["timestamp"]).timestamp() - died, 1)
                for e in taken
                for died in (killed_first, killed_second)
                if 0 < datetime.fromisoformat(e["timestamp"]).timestamp() - died < KILLED_S
            ]
            assert moves, f"the lease never changed hands after a kill: {taken}"
            slot = HA["lease_slot_s"]
            assert max(moves) <= slot + min(5, slot * LEAD) + min(5, slot * LAG) + 0.5, moves
            print(
                json.dumps(
                    {
                        "steady_uplink_ratio": round(steady_ratio, 4),
                        "uplink_ratio_with_kills": round(total_uplink / total_stored, 4),
                        "lease_moved_after_s": moves,
                        "lease_slot_s": HA["lease_slot_s"],
                        "lease_requests_per_slot_pair": round(
                            leases / ((end - begin).total_seconds() / HA["lease_slot_s"]), 2
                        ),
                    }
                )
            )
