"""`install.sh` in a scratch root (DESTDIR): the user, the virtualenv from the lock, the
config and the certificate only where there are none, owners and modes, the unit
(checked with systemd-analyze verify), idempotent, and --uninstall keeping the config
and the spool unless --purge. systemd does not run here, so nothing is started."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="install.sh sets owners: it runs as root (CI does)")


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "install.sh"), *args],
        env={**os.environ, "DESTDIR": str(root)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def mode_owner(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid


def test_install_upgrade_and_uninstall_in_a_scratch_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()  # empty: the installer makes the account files it needs
    planned = install(root, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "would create the system user axis-relay" in planned.stdout
    assert "would write" in planned.stdout
    assert list(root.iterdir()) == []  # a dry run changes nothing

    first = install(root)
    assert first.returncode == 0, first.stderr
    assert "next steps" in first.stdout
    assert "axis-relay check-config" in first.stdout
    # On the PATH, as the README's operator commands assume.
    assert os.readlink(root / "usr/local/bin/axis-relay") == "/opt/axis-relay/.venv/bin/axis-relay"
    completion = root / "usr/share/bash-completion/completions/axis-relay"
    assert "complete -F _axis_relay axis-relay" in completion.read_text()
    [user] = [line for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("axis-relay:")]
    uid, gid = int(user.split(":")[2]), int(user.split(":")[3])
    assert user.endswith(":/var/lib/axis-relay:/usr/sbin/nologin")
    etc = root / "etc/axis-relay"
    assert mode_owner(etc) == ("0o750", 0, gid)
    assert mode_owner(etc / "relay.toml") == ("0o640", 0, gid)
    assert mode_owner(etc / "tls/relay.key") == ("0o640", 0, gid)
    assert mode_owner(etc / "tls/ca.key") == ("0o600", 0, gid)
    assert mode_owner(root / "var/lib/axis-relay") == ("0o750", uid, gid)
    unit = root / "etc/systemd/system/axis-relay.service"
    assert mode_owner(unit) == ("0o644", 0, 0)
    assert "systemd does not run here" in first.stdout
    # The unit's documentation is where it says; pip's build left nothing behind.
    documentation = next(line for line in unit.read_text().splitlines() if line.startswith("Documentation="))
    for url in documentation.removeprefix("Documentation=").split():
        assert (root / url.removeprefix("file:///")).is_file(), url
    src = root / "opt/axis-relay/src"
    assert not (src / "build").exists()
    assert not list(src.glob("*.egg-info"))

    # The installed program runs, and the certificate it made loads with its key.
    exe = root / "opt/axis-relay/.venv/bin/axis-relay"
    config = tmp_path / "relay.toml"
    config.write_text((etc / "relay.toml").read_text().replace("/etc/axis-relay", str(etc)))
    check = subprocess.run([str(exe), "check-config", str(config)], capture_output=True, text=True)
    # The installed example is refused for its placeholders (so the unit is not started
    # with them), and for nothing about the certificate install.sh made.
    assert check.returncode == 2, check.stderr
    assert "devices.cam-entrance.token: the value is the example config's placeholder" in check.stderr
    assert "tls_cert" not in check.stderr
    # The installed unit verifies, pointed at the installed program.
    probe = tmp_path / "axis-relay.service"
    probe.write_text(unit.read_text().replace("/opt/axis-relay", str(root / "opt/axis-relay")))
    verified = subprocess.run(["systemd-analyze", "verify", str(probe)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    assert "Unknown" not in verified.stderr

    # Again: the operator's config and the certificate are kept, the user not doubled.
    with open(etc / "relay.toml", "a") as f:
        f.write("\n# edited on site\n")
    certificate = (etc / "tls/relay.crt").read_bytes()
    again = install(root)
    assert again.returncode == 0, again.stderr
    assert (etc / "relay.toml").read_text().endswith("# edited on site\n")
    assert (etc / "tls/relay.crt").read_bytes() == certificate
    lines = (root / "etc/passwd").read_text().splitlines()
    assert sum(line.startswith("axis-relay:") for line in lines) == 1

    kept = install(root, "--uninstall")
    assert kept.returncode == 0, kept.stderr
    assert not (root / "opt/axis-relay").exists()
    assert not unit.exists()
    assert (etc / "relay.toml").exists()
    assert (root / "var/lib/axis-relay").exists()
    assert not (root / "usr/local/bin/axis-relay").exists()
    assert not completion.exists()
    assert "would remove the system user axis-relay" in install(root, "--uninstall", "--purge", "--dry-run").stdout
    purged = install(root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not etc.exists()
    assert not (root / "var/lib/axis-relay").exists()
    # The user it made goes with --purge; one it did not make would stay.
    assert not [line for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("axis-relay:")]

    wrong = install(root, "--purge")
    assert wrong.returncode != 0
    assert "--purge goes with --uninstall" in wrong.stderr
