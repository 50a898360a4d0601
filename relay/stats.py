"""What the relay did, counted separately so no number claims more than it means.

"accepted" is durable on local disk; only "uploaded" means S3 confirmed it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field


@dataclass
class RelayStats:
    clips_accepted: int = 0
    bytes_accepted: int = 0
    clips_rejected: int = 0
    clips_uploaded: int = 0
    bytes_uploaded: int = 0
    clips_quarantined: int = 0
    upload_retries: int = 0
    retries_by_reason: Counter[str] = field(default_factory=Counter)
    last_upload_at: float | None = None
    started_at: float = field(default_factory=time.time)

    def summary(self) -> dict[str, object]:
        out = asdict(self)
        out["retries_by_reason"] = dict(self.retries_by_reason)
        return out
