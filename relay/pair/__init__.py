"""Two gateways per site, with S3 as the only coordinator.

- ``split``: which relay of the pair uploads a camera's clips first (its primary).
- ``leases``: which relay back-fills a camera now, by slot keys created with
  ``If-None-Match: *`` in the bucket.
- ``peer``: each relay's heartbeat in the bucket, the peer's read back, and a
  connection to the peer's ingest port: is it alive, what has it stored.
- ``pair``: the three together, as upload and back-fill ask them.
"""

from relay.pair.pair import Pair as Pair
