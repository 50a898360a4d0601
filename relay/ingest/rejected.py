"""An upload refused: the HTTP status and message the sender gets, and what the log says."""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict


class Rejected(Exception):
    """An upload refused with an HTTP status and a message the sender can act on."""

    def __init__(
        self, status: int, message: str, headers: Mapping[str, str] | None = None, *, logged: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = CIMultiDict(headers or {})  # several WWW-Authenticate challenges
        self.logged = logged or message  # what the operator reads, when the sender must read less
        self.received: dict[str, object] = {}  # a body cut off: its file name and the bytes that came

    def of(self, filename: str, bytes_received: int) -> Rejected:
        """The same refusal, naming the clip it cut off and how much of it had arrived."""
        self.received = {"filename": filename, "bytes_received": bytes_received}
        return self
