"""Upload: the worker pool, the rules every delivery follows, and the destinations
(S3 directly, or API Gateway -> Lambda -> S3)."""
