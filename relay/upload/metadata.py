"""What every object says about the clip it holds, as S3 user metadata (``x-amz-meta-*``),
the same on the direct path and through the API Gateway hand-off (the function signs
these into the presigned request; tests/test_contract.py pins the names on both sides).
"""

from __future__ import annotations

from relay.spool.clip import ClipMeta, footage_time, sequence_number


def object_metadata(meta: ClipMeta) -> dict[str, str]:
    """User metadata stored with every object: how a retry recognises its own clip, and
    which footage the object holds, so that coverage can be proven from the bucket alone
    (relay.coverage): the camera, the footage's start and end (UTC, to the millisecond),
    where each came from (relay.spool.timing), its origin, and the device's ``#s``
    sequence number where the file name carries one."""
    fields = {
        "clip-id": meta.clip_id,
        "camera": meta.camera,
        "received-at": meta.received_at,
        "crc32c": meta.crc32c,
        "origin": meta.origin,
    }
    if meta.starts is not None and meta.ends is not None:
        fields["footage-start"] = footage_time(meta.starts)
        fields["footage-end"] = footage_time(meta.ends)
        fields["times-from"] = f"{meta.starts_source or 'arrival'},{meta.ends_source or 'arrival'}"
    if (sequence := sequence_number(meta.filename)) is not None:
        fields["sequence"] = str(sequence)
    return fields
