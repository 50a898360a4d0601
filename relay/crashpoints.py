"""Named places where a test can make the relay die as if the power went out.

Set ``AXIS_RELAY_CRASH_AT=<name>`` in the relay's environment and the process sends
itself SIGKILL on reaching that place: no cleanup, no flush, exactly what a power cut
or an OOM kill leaves behind. Unset (always, in production) it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "AXIS_RELAY_CRASH_AT"

# Accepting a clip, in order.
INGEST_MID_BODY = "ingest-mid-body"
INGEST_BEFORE_FSYNC = "ingest-before-fsync"
INGEST_BEFORE_ANSWER = "ingest-before-answer"
# Uploading a clip, in order.
UPLOAD_BEFORE_CREATE = "upload-before-create"
UPLOAD_AFTER_CREATE = "upload-after-create"  # S3 answered CreateMultipartUpload; its id is not saved yet
UPLOAD_BETWEEN_PARTS = "upload-between-parts"
UPLOAD_AFTER_COMMIT = "upload-after-commit"
UPLOAD_MID_REMOVE = "upload-mid-remove"  # delivered; its spool directory half deleted

ALL = (
    INGEST_MID_BODY,
    INGEST_BEFORE_FSYNC,
    INGEST_BEFORE_ANSWER,
    UPLOAD_BEFORE_CREATE,
    UPLOAD_AFTER_CREATE,
    UPLOAD_BETWEEN_PARTS,
    UPLOAD_AFTER_COMMIT,
    UPLOAD_MID_REMOVE,
)


def reached(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
