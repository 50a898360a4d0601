"""The relay's version, from its installed distribution (pyproject.toml), and its main
libraries': for `axis-relay --version`, relay_started, the status page and
``axis_relay_build_info``."""

from __future__ import annotations

import platform
from importlib import metadata


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"  # run from a source tree that was never installed


VERSION = _version("axis-relay")
BUILD_INFO = {
    "version": VERSION,
    "python": platform.python_version(),
    "aiohttp": _version("aiohttp"),
    "botocore": _version("botocore"),
}
