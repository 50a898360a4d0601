"""What `axis-relay check-config` refuses beyond the config's own validation: a file
that is valid but not yet this site's. The example config ships placeholders (a bucket
name, "replace-with-..." secrets) that parse fine; installed as-is, the unit would go
live with a token anyone who read the example knows. And a device secret short enough
to guess is refused too (a hashed one cannot be measured, and is taken as given)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, SecretStr

from relay.config import RelayConfig
from relay.ingest.secret_hash import is_hashed

EXAMPLE_BUCKET = "my-site-clips"
PLACEHOLDER_MARK = "replace-with"
MIN_SECRET_CHARS = 16
SECRET_FIX = (
    "set a random one of 16 characters or more (e.g. `openssl rand -base64 24`), or its hash from "
    "`axis-relay hash-secret`"
)
CAMERA_FIX = "set the password of the relay's account on that camera (or AXIS_RELAY_CAMERA_<NAME>_PASSWORD)"


def _fix(path: str) -> str:
    if path.endswith(".camera.password"):
        return CAMERA_FIX
    if path.startswith("devices.") and path.endswith((".token", ".password")):
        return SECRET_FIX
    return "set this site's value"


def _placeholders(value: Any, path: str) -> list[str]:
    """Every string in the config, at any depth, still holding the example's placeholder."""
    if isinstance(value, BaseModel):
        return [p for name in type(value).model_fields for p in _placeholders(getattr(value, name), f"{path}.{name}")]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _placeholders(item, f"{path}.{key}")]
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if isinstance(text, str) and PLACEHOLDER_MARK in text:
        where = path.lstrip(".")
        shown = "the value" if isinstance(value, SecretStr) else repr(text)
        return [f"{where}: {shown} is the example config's placeholder: {_fix(where)}"]
    return []


def site_problems(config: RelayConfig) -> list[str]:
    """Each placeholder still in the config and each guessable device secret, by field, with the fix."""
    problems = _placeholders(config, "")
    if config.s3 is not None and config.s3.bucket == EXAMPLE_BUCKET:
        problems.append(f"s3.bucket: {EXAMPLE_BUCKET!r} is the example config's bucket: set this site's bucket")
    for name, device in config.devices.items():
        for field in ("token", "password"):
            secret = getattr(device, field)
            if secret is None:
                continue
            plain = secret.get_secret_value()
            if PLACEHOLDER_MARK in plain or is_hashed(plain):
                continue  # said above / cannot be measured
            if len(plain) < MIN_SECRET_CHARS:
                problems.append(
                    f"devices.{name}.{field}: {len(plain)} characters is too short to resist guessing: {SECRET_FIX}"
                )
    return problems
