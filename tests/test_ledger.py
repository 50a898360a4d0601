"""The clip ledger: what the relay received and where it went, kept after the spool lets go.

Real relays, a real SQLite file, and `axis-relay clips` run as a process, as an
operator would.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from relay.cli.render import parse_since
from relay.config import parse_config
from relay.dev.local_s3 import LocalS3, free_port
from relay.ledger import SCHEMA_VERSION, Ledger
from relay.spool.clip import ClipMeta, crc32c_b64, new_clip_id, sequence_number
from relay.spool.store import SpoolStore, StoredClip
from tests.support.harness import DEVICE, PATH, TLS, axis_relay, raw_config, running_relay, wait_until, write_config

DEAD_S3 = "https://127.0.0.1:1"  # nothing listens: clips stay queued


async def clips_cli(config_file: Path, *args: str) -> tuple[int, str, str]:
    return await axis_relay("clips", "--config", str(config_file), *args)


async def ledger_rows(config_file: Path, *args: str) -> list[dict[str, Any]]:
    code, out, err = await clips_cli(config_file, "--json", *args)
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


async def test_clips_lists_what_was_received_and_where_it_went(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    raw = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    config_file = write_config(tmp_path / "relay.toml", raw)
    names = ["video23-04-13_21-50-27-63_00041.mkv", "video23-04-13_21-50-42-63_00042.mkv", "plain.mkv"]
    async with running_relay(parse_config(raw, environ={}), tls) as relay:
        for name in names:
            assert (await relay.device.post_clip(PATH, os.urandom(20_000), filename=name)).status == 200

        async def all_uploaded() -> bool:
            rows = await ledger_rows(config_file)
            return len(rows) == 3 and all(r["state"] == "uploaded" for r in rows)

        await wait_until(all_uploaded, what="three uploaded rows in the ledger")
        rows = await ledger_rows(config_file)
    assert [r["filename"] for r in rows] == names  # oldest first
    assert [r["sequence"] for r in rows] == [41, 42, None]
    for row in rows:
        assert row["camera"] == DEVICE
        assert row["bytes"] == 20_000
        assert row["origin"] == "device"
        assert row["route"] == "s3"
        assert row["key"].endswith(row["filename"])
        assert row["received_at"] <= row["uploaded_at"]
        assert len(row["crc32c"]) == 8
    code, table, _ = await clips_cli(config_file)
    assert code == 0
    assert "video23-04-13_21-50-27-63_00041.mkv -> " in table
    assert "3 clip(s)" in table
    code, _, err = await clips_cli(config_file, "--camera", "someone-else")
    assert code == 2
    assert f"--camera 'someone-else': no such device in [devices] (known: {DEVICE})" in err
    # The config found through AXIS_RELAY_CONFIG, as an operator's profile sets it.
    code, out, err = await axis_relay("clips", "--json", env={"AXIS_RELAY_CONFIG": str(config_file)})
    assert code == 0, err
    assert out.endswith("]\n")  # one JSON document, ended by a newline
    assert json.loads(out) == rows
    assert await ledger_rows(config_file, "--since", (datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    code, _, err = await clips_cli(config_file, "--since", "yesterday-ish")
    assert code == 2
    assert "--since 'yesterday-ish'" in err
    assert "2h" in err


async def test_quarantine_and_spool_retry_show_in_the_ledger(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    # A fault of the clip (a refused key or bucket pauses delivery instead): a bit the
    # disk flipped in the spooled clip, which S3 refuses by its checksum.
    dead = raw_config(tmp_path, tls, f"https://127.0.0.1:{free_port()}", bucket)
    async with running_relay(parse_config(dead, environ={}), tls) as relay:  # the clip waits
        answer = await relay.device.post_clip(PATH, os.urandom(5_000), filename="q.mkv")
        clip_id = json.loads(answer.body)["clip_id"]
    data = tmp_path / "spool" / "queue" / clip_id / "data"
    original = data.read_bytes()
    data.write_bytes(bytes([original[0] ^ 1]) + original[1:])
    raw = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    config_file = write_config(tmp_path / "relay.toml", raw)
    async with running_relay(parse_config(raw, environ={}), tls, requeue_scan_s=0.05) as relay:

        async def state_is(state: str) -> bool:
            rows = await ledger_rows(config_file)
            return len(rows) == 1 and rows[0]["state"] == state

        await wait_until(lambda: state_is("quarantined"), what="the quarantine in the ledger")
        [row] = await ledger_rows(config_file)
        assert "BadDigest" in row["reason"]
        # `spool list` shows the reason and the fix stored with it.
        code, listing, _ = await axis_relay("spool", "list", "--config", str(config_file))
        assert code == 0
        assert f"quarantined  {clip_id}" in listing
        assert "fix: the spooled clip no longer matches the checksum" in listing
        # A clip id that matches nothing is said, not silently done.
        code, _, err = await axis_relay("spool", "retry", "bogus", "--config", str(config_file))
        assert code == 1
        assert "no quarantined clip matches bogus" in err
        (tmp_path / "spool" / "quarantine" / clip_id / "data").write_bytes(original)  # the operator's fix
        # The operator's command, in another process, while the relay runs.
        code, _, _ = await axis_relay("spool", "retry", "--config", str(config_file))
        assert code == 0
        await wait_until(lambda: state_is("uploaded"), what="the retried clip uploaded")
        [row] = await ledger_rows(config_file)
        assert row["reason"] is None
        assert relay.quarantined() == []
        code, out, _ = await axis_relay("spool", "retry", "--config", str(config_file))
        assert (code, out.strip()) == (0, "Nothing in quarantine: nothing to retry.")
        await wait_until(lambda: not relay.queued(), what="the spool empty")
        code, out, _ = await axis_relay("spool", "list", "--config", str(config_file))
        assert (code, out.strip()) == (0, f"The spool {tmp_path / 'spool'} is empty: nothing waits.")


async def test_start_up_reconciles_the_ledger_with_the_spool(tmp_path: Path, tls: TLS) -> None:
    raw = raw_config(tmp_path, tls, DEAD_S3, "clips")
    config_file = write_config(tmp_path / "relay.toml", raw)
    config = parse_config(raw, environ={})
    async with running_relay(config, tls) as relay:
        for name in ("a.mkv", "b.mkv", "c.mkv"):
            assert (await relay.device.post_clip(PATH, os.urandom(3_000), filename=name)).status == 200
    assert len(await ledger_rows(config_file)) == 3  # written before the relay stopped
    # The ledger is lost: the next start adds back every clip the spool holds.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{config.ledger_path}{suffix}").unlink(missing_ok=True)
    async with running_relay(config, tls):
        pass
    rows = await ledger_rows(config_file)
    assert sorted(r["filename"] for r in rows) == ["a.mkv", "b.mkv", "c.mkv"]
    assert {r["state"] for r in rows} == {"queued"}
    # A clip deleted by hand: the ledger thought it queued, the spool no longer has it.
    shutil.rmtree(config.spool.dir / "queue" / rows[0]["clip_id"])
    async with running_relay(config, tls):
        pass
    rows = await ledger_rows(config_file)
    assert [r["state"] for r in rows] == ["unknown", "queued", "queued"]
    assert "stopped abruptly" in rows[0]["reason"]


async def test_a_corrupt_ledger_is_moved_aside_and_clips_keep_flowing(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    raw = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    config_file = write_config(tmp_path / "relay.toml", raw)
    config = parse_config(raw, environ={})
    config.ledger_path.parent.mkdir(parents=True)
    config.ledger_path.write_bytes(b"this is not a database" * 100)
    async with running_relay(config, tls) as relay:
        assert (await relay.device.post_clip(PATH, os.urandom(5_000))).status == 200
        await wait_until(lambda: relay.stats.clips_uploaded == 1, what="the upload")
    [aside] = config.ledger_path.parent.glob("ledger.sqlite3.unusable-*")
    assert aside.read_bytes().startswith(b"this is not a database")
    [row] = await ledger_rows(config_file)
    assert row["state"] == "uploaded"


def meta_for(received: datetime, filename: str = "x.mkv") -> ClipMeta:
    return ClipMeta(
        clip_id=new_clip_id(received),
        camera="cam",
        filename=filename,
        content_type="video/x-matroska",
        size=10,
        crc32c=crc32c_b64(0),
        received_at=received.isoformat(),
    )


def test_schema_is_versioned_and_a_newer_one_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger.open(path)
    ledger.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")  # written by a newer release
    db.commit()
    db.close()
    Ledger.open_or_recreate(path).close()
    assert len(list(tmp_path.glob("ledger.sqlite3.unusable-*"))) == 1
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_pruning_keeps_recent_rows_and_every_queued_clip(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    old = datetime.now(UTC) - timedelta(days=40)
    old_uploaded, old_queued, recent = meta_for(old), meta_for(old), meta_for(datetime.now(UTC))
    ledger.clips.reconcile([StoredClip("queued", m.clip_id, m, {}) for m in (old_uploaded, old_queued, recent)])
    ledger.apply([("UPDATE clip SET state = 'uploaded' WHERE clip_id = :c", {"c": old_uploaded.clip_id})])
    assert ledger.prune(retention_days=30) == 1
    assert sorted(r.clip_id for r in ledger.clips.find()) == sorted([old_queued.clip_id, recent.clip_id])
    ledger.close()


@pytest.mark.parametrize(
    ("filename", "sequence"),
    [
        ("video23-04-13_21-50-27-63_00001.mkv", 1),
        ("cam_12345.mkv", 12345),
        ("video23-04-13_21-50-27-63.mkv", None),  # no #s in the template
        ("cam_20231104215027.mkv", None),  # a timestamp, not a sequence number
        ("00007", 7),
    ],
)
def test_sequence_number_from_the_file_name(filename: str, sequence: int | None) -> None:
    assert sequence_number(filename) == sequence


def test_since_takes_durations_and_times() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-11-28T08:00Z", now) == datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="30m, 2h, 7d"):
        parse_since("soon", now)


def test_store_lists_and_retries_through_its_api(tmp_path: Path) -> None:
    store = SpoolStore(tmp_path)
    store.prepare()
    meta = meta_for(datetime.now(UTC))
    clip_id = meta.clip_id
    directory, data = store.open_incoming(clip_id)
    data.write(b"0123456789")
    store.make_durable(directory, data, meta)
    store.quarantine(clip_id, "broken on purpose", {"code": "Test"})
    [entry] = list(store.entries())
    assert (entry.state, entry.reason["reason"], entry.meta and entry.meta.size) == (
        "quarantined",
        "broken on purpose",
        10,
    )
    assert store.retry_quarantined() == [clip_id]
    assert [e.state for e in store.entries()] == ["queued"]


def test_settled_gaps_are_pruned_with_the_clips_and_open_ones_kept(tmp_path: Path) -> None:
    from relay.backfill.gaps import FoundGap

    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    book = ledger.gaps
    old = datetime.now(UTC) - timedelta(days=40)
    found = [
        FoundGap(old, old + timedelta(seconds=15), "sequence", "old, filled"),
        FoundGap(old + timedelta(minutes=1), old + timedelta(minutes=2), "coverage", "old, still retrying"),
        FoundGap(datetime.now(UTC) - timedelta(minutes=5), datetime.now(UTC), "coverage", "recent, filled"),
    ]
    filled, retrying, recent = book.record("cam", found, datetime.now(UTC))
    book.update(filled.gap_id, "filled", datetime.now(UTC))
    book.update(retrying.gap_id, "retrying", datetime.now(UTC))
    book.update(recent.gap_id, "filled", datetime.now(UTC))
    assert ledger.prune(retention_days=30) == 1
    assert [g.found for g in book.find()] == ["old, still retrying", "recent, filled"]
    ledger.close()


def test_a_version_1_ledger_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    from relay.ledger.schema import MIGRATIONS

    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO clip (clip_id, camera, filename, bytes, crc32c, received_at, state) "
        "VALUES ('c1', 'cam', 'a.mkv', 1, 'AAAAAA==', '2026-11-28T08:00:00.000000Z', 'uploaded')"
    )
    db.close()
    ledger = Ledger.open(path)
    [row] = ledger.clips.find()
    assert (row.clip_id, row.state, row.starts_source) == ("c1", "uploaded", None)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    ledger.close()
