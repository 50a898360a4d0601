"""Running it: metrics and health, counts, systemd, logging, certificates, crash points."""
