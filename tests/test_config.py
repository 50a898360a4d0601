"""The config is strict, and every error names the field and the fix."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

import pytest
import tomli_w

from relay.config import APIGW_DEFAULT_BODY_BYTES, ApiGatewayConfig, ConfigError, load_config, parse_config
from tests.support.harness import axis_relay_sync

EXAMPLE = Path(__file__).parent.parent / "config" / "relay.example.toml"


def minimal() -> dict[str, object]:
    return {"s3": {"bucket": "clips"}, "devices": {"cam1": {"token": "t"}}}


def test_example_config_is_valid_and_documents_every_key() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.s3 is not None
    assert config.s3.bucket == "my-site-clips"
    text = EXAMPLE.read_text()
    assert "destination =" in text
    for section in ("ingest", "spool", "s3", "backfill", "retry", "metrics", "log"):
        model = getattr(config, section)
        for key in type(model).model_fields:
            assert f"{key} =" in text, f"{section}.{key} is not documented in the example config"
    entrance = config.devices["cam-entrance"]
    assert entrance.camera is not None
    for model in (entrance, entrance.camera):
        for key in type(model).model_fields:
            if key not in ("username", "password", "allow_from", "camera", "ca_bundle"):
                assert f"{key} =" in text, f"devices.*.{key} is not documented in the example config"
    assert "# ca_bundle =" in text
    # Documented commented out (the example's destination is S3): each key once.
    apigw = text[text.index("# [apigw]") : text.index("[retry]")]
    for key in ApiGatewayConfig.model_fields:
        assert f"# {key} =" in apigw, f"apigw.{key} is not documented in the example config"


def test_unknown_key_is_refused_by_name() -> None:
    raw = minimal()
    raw["s3"] = {"bucket": "clips", "bucekt_region": "x"}
    with pytest.raises(ConfigError, match=r"s3\.bucekt_region: unknown key"):
        parse_config(raw, environ={})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"s3": {}}, r"s3\.bucket: required"),
        ({"devices": {}}, r"devices: .*at least 1"),
        ({"devices": {"cam1": {}}}, r"devices\.cam1: .*token"),
        ({"devices": {"../x": {"token": "t"}}}, r"devices\.\.\./x"),
        ({"s3": {"bucket": "b", "key_template": "{camera}/{nope}"}}, r"unknown field\(s\) \['nope'\]"),
        ({"s3": {"bucket": "b", "key_template": "{camera}/fixed.mkv"}}, r"every clip lands on one key"),
        ({"s3": {"bucket": "b", "part_size_bytes": 1000}}, r"s3\.part_size_bytes"),
        # 100 GiB clips in 5 MiB parts: 20,480 parts, over S3's 10,000.
        (
            {"ingest": {"max_body_bytes": 100 * 2**30}, "s3": {"bucket": "clips", "part_size_bytes": 5 * 2**20}},
            r"s3\.part_size_bytes: .*20480 parts, and S3 allows 10000; raise s3\.part_size_bytes to at least 11534336",
        ),
        ({"s3": {"bucket": "relay--euw1-az1--x-s3", "addressing_style": "path"}}, r"directory buckets .*virtual"),
        ({"ingest": {"tls_cert": __file__}}, r"set both tls_cert and tls_key"),
        ({"s3": {"bucket": "clips", "ca_bundle": "/nope.pem"}}, r"s3\.ca_bundle: Path does not point to a file"),
        ({"s3": {"bucket": "clips", "key_template": "{camera.__class__}/{filename}"}}, r"only plain field names"),
        ({"destination": "apigw"}, r"no \[apigw\] section; add one with at least url"),
        ({"destination": "sftp"}, r"destination: Input should be 's3' or 'apigw'"),
        ({"destination": "apigw", "apigw": {"url": "abc.execute-api"}}, r"apigw\.url: .*https:// URL"),
        ({"destination": "apigw", "apigw": {"url": "https://a/b", "ca_bundle": "/nope.pem"}}, r"apigw\.ca_bundle: "),
        ({"destination": "apigw", "apigw": {"url": "https://a/b", "max_body_bytes": 11 * 2**20}}, r"apigw\.max_body"),
        ({"destination": "apigw", "apigw": {"url": "https://a/b", "fallback": "s3"}, "s3": None}, r"no \[s3\] section"),
        # One sentence with an example, not pydantic's internals (its IPv4 and IPv6 tries).
        (
            {"devices": {"cam1": {"token": "t", "allow_from": ["10.0.0.0/8", "10.0.0.0/33"]}}},
            r"^devices\.cam1\.allow_from: entry 1 \('10\.0\.0\.0/33'\) is not a network: .*192\.168\.10\.0/24[^\n]*$",
        ),
        ({"devices": {"cam1": {"token": "t", "address": "cam.local"}}}, r"devices\.cam1\.address: .*192\.168\.1\.20"),
    ],
)
def test_errors_name_the_field(change: dict[str, object], message: str) -> None:
    raw = minimal()
    raw.update(change)
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, environ={})


def test_secrets_come_from_the_environment() -> None:
    raw = minimal()
    raw["devices"] = {"cam-1": {"username": "u", "password": "file"}}
    env = {
        "AXIS_RELAY_S3_SECRET_ACCESS_KEY": "from-env",
        "AXIS_RELAY_S3_ACCESS_KEY_ID": "AKIAENV",
        "AXIS_RELAY_DEVICE_CAM_1_PASSWORD": "env-password",
    }
    config = parse_config(raw, environ=env)
    assert config.s3 is not None
    assert config.s3.secret_access_key is not None
    assert config.s3.secret_access_key.get_secret_value() == "from-env"
    assert config.devices["cam-1"].password is not None
    assert config.devices["cam-1"].password.get_secret_value() == "env-password"
    assert "env-password" not in repr(config)
    assert "from-env" not in repr(config)


def test_apigw_destination_needs_no_s3_section_and_takes_its_key_from_the_environment() -> None:
    raw: dict[str, object] = {
        "destination": "apigw",
        "apigw": {"url": "https://abc.execute-api.eu-west-1.amazonaws.com/prod/upload"},
        "devices": {"cam1": {"token": "t"}},
    }
    config = parse_config(raw, environ={"AXIS_RELAY_APIGW_API_KEY": "key-from-env"})
    assert config.s3 is None
    assert config.apigw is not None
    assert config.apigw.api_key is not None
    assert config.apigw.api_key.get_secret_value() == "key-from-env"
    assert config.apigw.max_body_bytes == APIGW_DEFAULT_BODY_BYTES
    # The derivation in the README: base64 of the body plus the event fits 6 MiB.
    assert APIGW_DEFAULT_BODY_BYTES // 3 * 4 + 16 * 1024 <= 6 * 1024 * 1024


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return axis_relay_sync(*args)


def test_check_config_cli(tmp_path: Path) -> None:
    # The example as an installer has it: certificates made, the spool somewhere writable.
    assert run_cli("gen-cert", "relay.local", "--dir", str(tmp_path / "tls")).returncode == 0
    example = tmp_path / "example.toml"
    example.write_text(
        EXAMPLE.read_text()
        .replace("/etc/axis-relay/tls", str(tmp_path / "tls"))
        .replace("/var/lib/axis-relay/spool", str(tmp_path / "spool"))
    )
    # As shipped, its placeholders are refused, each by name with its fix.
    shipped = run_cli("check-config", str(example))
    assert shipped.returncode == 2
    refused = [line.split(":")[0] for line in shipped.stderr.splitlines()[1:]]
    assert refused == [
        "devices.cam-entrance.token",
        "devices.cam-entrance.camera.password",
        "devices.cam-yard.password",
        "s3.bucket",
    ], shipped.stderr
    assert "openssl rand -base64 24" in shipped.stderr
    # Filled in for a site, it passes; a short device token does not.
    example.write_text(
        example.read_text()
        .replace("replace-with-a-long-random-token", "Zk4r9-Yq2LmWv8TbN3xP")
        .replace("replace-with-the-camera-password", "camera-account-password")
        .replace("replace-with-a-password", "another-long-device-password")
        .replace("my-site-clips", "acme-hq-clips")
    )
    ok = run_cli("check-config", "--config", str(example))
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    short = tmp_path / "short.toml"
    short.write_text(example.read_text().replace("Zk4r9-Yq2LmWv8TbN3xP", "Zk4r9-Yq2"))
    result = run_cli("check-config", str(short))
    assert result.returncode == 2
    assert "devices.cam-entrance.token: 9 characters is too short to resist guessing" in result.stderr
    # The connection cap's arithmetic, under this process's descriptor limit.
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    cap = min(256, (soft - 64 - 4 * 2) // 2)
    assert f"connections: at most {cap} = min(ingest.max_connections 256, (file descriptor limit {soft} " in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[s3]\nbucket = "clips"\nworkers = 0\n[devices.cam1]\ntoken = "t"\n')
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2
    assert "s3.workers" in result.stderr
    assert "Traceback" not in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[s3\n")
    result = run_cli("check-config", str(broken))
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr
    missing = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr


def test_check_config_names_the_gateway_destination(tmp_path: Path) -> None:
    cfg = tmp_path / "relay.toml"
    cfg.write_text(
        'destination = "apigw"\n[apigw]\nurl = "https://abc.execute-api.eu-west-1.amazonaws.com/prod/upload"\n'
        '[devices.cam1]\ntoken = "a-token-of-twenty-chars"\n'
    )
    result = run_cli("check-config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "to https://abc.execute-api.eu-west-1.amazonaws.com/prod/upload" in result.stdout


def test_run_refuses_a_port_in_use_with_exit_3(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "relay.toml"
        cfg.write_text(
            f'[ingest]\nhost = "127.0.0.1"\nport = {port}\n[spool]\ndir = "{tmp_path / "spool"}"\n'
            '[s3]\nbucket = "clips"\naccess_key_id = "a"\nsecret_access_key = "b"\n'
            '[metrics]\nenabled = false\n[devices.cam1]\ntoken = "a-token-of-twenty-chars"\n'
        )
        result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 3
    assert "ingest.host/port" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_catches_what_would_stop_the_start(tmp_path: Path) -> None:
    """Files that exist but do not load as a TLS pair, a spool it cannot write, a config
    that is not UTF-8: each a clear line and exit 2, not a traceback or a restart loop."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    tls = {"tls_cert": str(garbage), "tls_key": str(garbage)}
    raw = minimal() | {"ingest": tls, "spool": {"dir": str(garbage / "spool")}}  # under a file: never a directory
    config_file = tmp_path / "relay.toml"
    config_file.write_text(tomli_w.dumps(raw))
    result = axis_relay_sync("check-config", str(config_file))
    assert result.returncode == 2
    assert "ingest.tls_cert/tls_key: cannot load" in result.stderr
    assert "spool.dir: " in result.stderr
    assert "is not a directory" in result.stderr
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes("# caméra\n".encode("latin-1") + config_file.read_bytes())
    result = axis_relay_sync("check-config", str(latin1))
    assert result.returncode == 2
    assert "not UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr


def camera_raw(**camera: object) -> dict[str, object]:
    section = {"url": "https://192.168.1.20", "username": "root", "password": "p", "expect": "continuous", **camera}
    return {"s3": {"bucket": "clips"}, "devices": {"cam1": {"token": "t", "camera": section}}}


def test_camera_section_is_strict_and_names_the_fix() -> None:
    config = parse_config(camera_raw(), environ={})
    camera = config.devices["cam1"].camera
    assert camera is not None
    assert (camera.disk, camera.verify_tls, camera.expect) == ("SD_DISK", True, "continuous")
    with pytest.raises(ConfigError, match=r"devices\.cam1\.camera\.pasword: unknown key"):
        parse_config(camera_raw(pasword="x"), environ={})
    with pytest.raises(ConfigError, match=r"devices\.cam1\.camera\.url: .*base URL"):
        parse_config(camera_raw(url="192.168.1.20/axis-cgi"), environ={})
    with pytest.raises(ConfigError, match=r"devices\.cam1\.camera\.expect"):
        parse_config(camera_raw(expect="sometimes"), environ={})
    raw = camera_raw()
    del raw["devices"]["cam1"]["camera"]["expect"]  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"devices\.cam1\.camera\.expect: required"):
        parse_config(raw, environ={})
    with pytest.raises(ConfigError, match=r"filename_timezone: unknown time zone"):
        parse_config({"s3": {"bucket": "clips"}, "devices": {"c": {"token": "t", "filename_timezone": "Mars/Base"}}})
    with pytest.raises(ConfigError, match=r"filename_template: .*whole time stamp"):
        parse_config({"s3": {"bucket": "clips"}, "devices": {"c": {"token": "t", "filename_template": "clip_#s.mkv"}}})


def without_password() -> dict[str, object]:
    raw = camera_raw()
    del raw["devices"]["cam1"]["camera"]["password"]  # type: ignore[index]
    return raw


def test_camera_password_from_the_environment_and_never_shown() -> None:
    config = parse_config(without_password(), environ={"AXIS_RELAY_CAMERA_CAM1_PASSWORD": "from-env-secret"})
    camera = config.devices["cam1"].camera
    assert camera is not None
    assert camera.password.get_secret_value() == "from-env-secret"
    assert "from-env-secret" not in repr(config)
    with pytest.raises(ConfigError, match=r"devices\.cam1\.camera\.password: required"):
        parse_config(without_password(), environ={})


def test_backfill_key_template_is_checked_like_the_other() -> None:
    raw = {"s3": {"bucket": "clips", "backfill_key_template": "{camera}/{when}.mkv"}, "devices": {"c": {"token": "t"}}}
    with pytest.raises(ConfigError, match=r"s3\.backfill_key_template: .*unknown field"):
        parse_config(raw, environ={})
