"""relay/_compat.py: every private name the relay reaches for is still in the installed
versions, and when one is gone the relay refuses to start, naming the package, its
version and the name, instead of misbehaving quietly."""

from __future__ import annotations

import pytest
from aiohttp import web

from relay import _compat


def test_every_private_name_is_there_in_the_installed_versions() -> None:
    assert _compat.missing(_compat.REACHES) == []
    _compat.check()


def test_a_name_gone_from_an_upgrade_is_named_with_the_package_and_its_version() -> None:
    class SiteOfANewAiohttp(web.BaseSite):
        __slots__ = ("_backlog", "_runner", "_ssl_context")  # _server renamed, say

    gone = _compat.missing([("aiohttp", SiteOfANewAiohttp, "_server"), ("aiohttp", web.BaseSite, "_server")])
    assert len(gone) == 1
    assert gone[0].startswith("aiohttp 3.")
    assert "SiteOfANewAiohttp._server is gone" in gone[0]


def test_the_relay_refuses_to_start_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "REACHES", [*_compat.REACHES, ("aiobotocore", object, "_made_up_hook")])
    with pytest.raises(_compat.CompatError, match=r"aiobotocore 2\.\S+: object\._made_up_hook is gone.*checked with"):
        _compat.check()
