"""The response cache key: what changes the answer changes the key, nothing else."""

from __future__ import annotations

from schemas.gateway_options import GatewayOptions
from services.ingress.cache import key_of, wanted
from services.runtime.settings import CacheSettings

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def test_key_ignores_fields_that_do_not_change_the_answer() -> None:
    same = {**BODY, "user": "u1", "metadata": {"a": "b"}, "x-gateway": {"cache": True}}
    assert key_of("m", BODY) == key_of("m", same)
    assert key_of("m", BODY) == key_of("m", dict(reversed(BODY.items())))
    assert key_of("m", BODY) != key_of("other", BODY)
    assert key_of("m", BODY) != key_of("m", {**BODY, "temperature": 1})


def test_who_decides_whether_to_cache() -> None:
    off, on = CacheSettings(), CacheSettings(enabled=True)
    assert not wanted(off, GatewayOptions(), stream=False)
    assert wanted(off, GatewayOptions(cache=True), stream=False)
    assert not wanted(on, GatewayOptions(cache=False), stream=False)
    assert wanted(on, GatewayOptions(), stream=False)
    assert not wanted(on, GatewayOptions(cache=True), stream=True)
