"""axis-relay: take clips from AXIS devices on the LAN, keep them safe, deliver them to S3."""

__version__ = "0.1.0"
