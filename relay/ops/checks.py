"""What a preflight check found: one line per step, and whether all is well."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CheckReport:
    verified: bool = False
    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)

    def fail(self, line: str) -> None:
        self.verified = False
        self.lines.append(line)
