"""Dev-only: `make run`'s embedded S3 server and demo set-up. `axis-relay run` never imports this."""
