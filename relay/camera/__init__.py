"""Talking to a camera's own API (VAPIX)."""
