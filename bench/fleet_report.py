"""The fleet benchmark's tables: the fleet against nginx and the AWS CLI, and the
before/after of ``--against``."""

from __future__ import annotations

import statistics
from typing import Any


def print_table(results: dict[str, Any]) -> None:
    aws = results.get("aws_cli")
    reference = aws["cpu_s_per_gb_without_start_up"] if aws else float("nan")
    columns = [
        "cameras",
        "body",
        "ack p50 / p99 relay (nginx)",
        "ingest CPU s/GB relay : nginx",
        "upload CPU s/GB relay : AWS CLI",
        "live ack p99, CPU s/GB",
        "peak RSS relay (nginx)",
    ]
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for fleet in results["fleets"]:
        live = fleet["relay_live"]
        for mode in results["args"]["modes"]:
            relay, web = fleet[f"relay_{mode}"], fleet[f"nginx_{mode}"]
            upload = relay["upload"]["cpu_s_per_gb"]
            ingest, nginx_cpu = relay["cpu_s_per_gb"], web["cpu_s_per_gb"]
            cells = [
                str(fleet["cameras"]),
                mode,
                f"{relay['ack_p50_ms']:.1f} / {relay['ack_p99_ms']:.1f} ms"
                f" ({web['ack_p50_ms']:.1f} / {web['ack_p99_ms']:.1f})",
                f"{ingest:.2f} : {nginx_cpu:.2f} = **{ingest / nginx_cpu:.2f}x**",
                f"{upload:.2f} : {reference:.2f} = **{upload / reference:.2f}x**",
                f"{live['ack_p99_ms']:.1f} ms, {live['cpu_s_per_gb']:.2f}" if mode == "fixed" else "",
                f"{fleet['relay_peak_rss_mib']:.0f} MiB ({fleet['nginx_peak_rss_mib']:.0f})",
            ]
            print("| " + " | ".join(cells) + " |")
    if aws:
        print(
            f"AWS CLI (aws s3 cp --recursive, {aws['clips']} clips): {aws['cpu_s_per_gb']:.2f} CPU s/GB as run,"
            f" {reference:.2f} without its start-up ({aws['start_up_cpu_s']:.2f} s)"
        )
    if "big_clip" in results:
        big = results["big_clip"]
        print(f"one {big['bytes'] / 2**30:.3g} GiB clip: relay peak RSS {big['relay_peak_rss_mib']:.0f} MiB")


def print_against(rows: dict[str, list[dict[str, Any]]]) -> None:
    """Medians over the rounds, before and after, and their ratio."""
    print()
    for cameras in sorted({r["cameras"] for r in rows["after"]}):
        for mode in sorted({r["mode"] for r in rows["after"]}):
            figures = {}
            for name in ("before", "after"):
                mine = [r for r in rows[name] if r["cameras"] == cameras and r["mode"] == mode]
                figures[name] = {
                    "ack p50 ms": statistics.median(r["ack_p50_ms"] for r in mine),
                    "ack p99 ms": statistics.median(r["ack_p99_ms"] for r in mine),
                    "ingest CPU s/GB": statistics.median(r["cpu_s_per_gb"] for r in mine),
                    "upload CPU s/GB": statistics.median(r["upload"]["cpu_s_per_gb"] for r in mine),
                    "peak RSS MiB": max(r["peak_rss_mib"] for r in mine),
                }
            print(f"{cameras} cameras, {mode}: before -> after (ratio), medians of {len(mine)} rounds")
            for key, before in figures["before"].items():
                after = figures["after"][key]
                print(f"  {key:<16} {before:7.2f} -> {after:7.2f}  ({after / before:.2f})")
