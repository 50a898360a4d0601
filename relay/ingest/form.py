"""The small fields of a multipart upload: bounded in number and size, counted against
the body limit with the file part, read under the body's idle deadline, and never a
credential (they are kept with the clip like query parameters)."""

from __future__ import annotations

from aiohttp import BodyPartReader

from relay.ingest.auth import TOKEN_PARAMS
from relay.ingest.idle import IdleDeadline
from relay.ingest.rejected import Rejected

MAX_FORM_FIELD = 4096
MAX_FORM_FIELDS = 32
# Form fields never stored with a clip: credentials, whatever the form calls them.
SECRET_FIELDS = frozenset({*TOKEN_PARAMS, "password", "passwd", "username", "user", "auth", "authorization"})


class FormFields:
    """A multipart body's small fields: every one counted (not only distinct names), and
    their bytes count against ingest.max_body_bytes with the file part's. Each field is
    kept with the clip like a query parameter, never a credential."""

    def __init__(self, max_body_bytes: int) -> None:
        self._limit = max_body_bytes
        self.fields: dict[str, str] = {}
        self.count = 0
        self.bytes = 0
        self.file_bytes = 0

    async def read_field(self, part: BodyPartReader, idle: IdleDeadline) -> None:
        self.count += 1
        if self.count > MAX_FORM_FIELDS:
            raise Rejected(400, f"more than {MAX_FORM_FIELDS} form fields; send the clip and a few fields")
        value = b""
        while chunk := await idle.owed(part.read_chunk(MAX_FORM_FIELD)):
            value += chunk
            self.bytes += len(chunk)
            if len(value) > MAX_FORM_FIELD:
                raise Rejected(400, f"form field {part.name!r} is longer than {MAX_FORM_FIELD} bytes")
            if self.bytes + self.file_bytes > self._limit:
                raise Rejected(413, f"body exceeds ingest.max_body_bytes ({self._limit} bytes)")
        if part.name and part.name not in SECRET_FIELDS:
            self.fields[part.name] = value.decode(errors="replace")
