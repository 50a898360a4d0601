"""Sizes as people read them (the logs' console form, `axis-relay status`)."""

from __future__ import annotations


def human_bytes(value: object) -> str:
    """1234567 -> '1.2 MB' (decimal units, as disks and S3's console count); a non-number as it is."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
