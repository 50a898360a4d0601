"""Habits the suite keeps: asyncio debug mode on, and no dev-only code in `axis-relay run`."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

from tests.support.harness import TLS, raw_config, write_config
from tests.support.relay_process import relay_process

DEV_ONLY = ("relay.dev", "trustme", "pytest", "tomli_w", "yaml")


async def test_the_suite_runs_in_asyncio_debug_mode() -> None:
    # pyproject.toml: asyncio_debug = true. In debug mode a non-thread-safe call from a
    # worker thread raises instead of working by accident.
    assert asyncio.get_running_loop().get_debug()


async def test_run_imports_no_dev_only_code(tmp_path: Path, tls: TLS) -> None:
    raw = raw_config(tmp_path, tls, "https://127.0.0.1:1", "clips")
    # -X importtime: every module the process imports is named on stderr.
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context(), env=env) as relay:
        assert relay.env["PYTHONASYNCIODEBUG"] == "1"
        assert await relay.stop() == 0
    imported = [e["line"].rsplit("|", 1)[-1].strip() for e in relay.named("raw") if "import time" in e["line"]]
    assert "relay.server" in imported  # the import log is really there
    assert [m for m in imported if m.split(".")[0] in DEV_ONLY or m.startswith("relay.dev")] == []


# The layers, lowest first: a module imports only from its own layer or one below. A
# module belongs to the longest prefix named here.
LAYERS: list[tuple[str, ...]] = [
    (
        "relay.ops.version",
        "relay.ops.units",
        "relay.tasks",
        "relay.crashpoints",
        "relay.templates",
        "relay._compat",
        "relay.backoff",
        "relay.digest",
        # The key template read backwards: beside the template itself.
        "relay.coverage.keys",
    ),
    ("relay.config", "relay.config_base", "relay.config_footage", "relay.config_destinations", "relay.config_pair"),
    # What every part reports into: counts, logs, systemd, a check's report.
    ("relay.ops.stats", "relay.ops.checks", "relay.ops.logs", "relay.ops.journal", "relay.ops.systemd"),
    # Clips on disk, and the arithmetic of spans of footage (pure; the ledger stores them).
    ("relay.spool", "relay.backfill.gaps"),
    # The ledger: every clip's history, the gaps, in SQLite; the only package that speaks SQL.
    ("relay.ledger",),
    ("relay.ingest", "relay.camera", "relay.upload"),
    # Footage over time: gaps fetched back, coverage read from the bucket, the pair's leases.
    ("relay.backfill", "relay.coverage", "relay.pair"),
    # What watches everything: health, metrics, the status page, certificates, site checks.
    ("relay.ops",),
    ("relay.server",),
    ("relay.dev", "relay.cli", "relay.__main__", "relay"),
]
ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best = max(
        ((len(prefix), n) for n, names in enumerate(LAYERS) for prefix in names
         if module == prefix or module.startswith(prefix + ".")),
        default=None,
    )  # fmt: skip
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def import_graph(package: str = "relay") -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (at any depth of the file, lazily
    and under TYPE_CHECKING too)."""
    modules = {module_name(p): p for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
                # `from relay.ops import journal` imports the module journal, not ops' names.
                candidates = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                              for a in node.names]  # fmt: skip
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            graph[module] |= {c for c in candidates if c in modules and c != module}
    return graph


def test_imports_run_down_the_layers_and_never_in_a_circle() -> None:
    graph = import_graph()
    against = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))
    assert against == [], "imports against the layers (LAYERS above)"
    # No cycles among modules either, in the relay or in the benchmarks.
    assert cycles_in(graph) == []
    assert cycles_in(import_graph("bench")) == []


def test_only_the_ledger_package_speaks_sql() -> None:
    """No connection leaves relay/ledger/: nothing else imports sqlite3 or writes SQL."""
    sql = re.compile(r"\b(SELECT .+ FROM|INSERT (OR \w+ )?INTO|UPDATE \w+ SET|DELETE FROM|CREATE (TABLE|INDEX))\b")
    found = []
    for path in sorted((ROOT / "relay").rglob("*.py")):
        if path.is_relative_to(ROOT / "relay" / "ledger"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found += [f"{module_name(path)} imports sqlite3" for n in names if n.split(".")[0] == "sqlite3"]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and sql.search(node.value):
                found.append(f"{module_name(path)}:{node.lineno} SQL {node.value[:40]!r}")
    assert found == []


def cycles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected parts of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            part = []
            while True:
                member = stack.pop()
                part.append(member)
                if member == node:
                    break
            if len(part) > 1:
                cycles.append(sorted(part))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles
