"""What every config model shares: strict (unknown keys refused, frozen), ports, base URLs."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MiB = 1024 * 1024


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# 0 = any free port; the bound address is logged in relay_started (tests use this).
Port = Annotated[int, Field(ge=0, le=65535)]


def base_url(value: str, what: str, example: str) -> str:
    """``http(s)://host[:port]`` and nothing after it, without a trailing slash."""
    if not re.match(r"^https?://[^/\s]+/?$", value):
        raise ValueError(f"must be {what}, e.g. https://{example}")
    return value.rstrip("/")
