"""Gaps in cameras' footage, and fetching it back from their SD cards."""
