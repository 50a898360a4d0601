"""Ingest: the HTTPS endpoint devices send clips to, and who may send (auth, Digest, brakes)."""
