"""Keys: how they are presented, hashed and checked."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from schemas.keys import KeyRecord
from services.ingress.admin_keys import duration_s
from services.ingress.auth import KeyStore, presented_key
from services.runtime.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from services.runtime.keyhash import key_hash
from services.runtime.settings import AuthSettings


def store(**records: KeyRecord) -> KeyStore:
    keys = KeyStore(AuthSettings(master_key=SecretStr("sk-master")))
    keys.records.update(records)
    return keys


def test_keys_come_from_bearer_or_x_api_key() -> None:
    assert presented_key(Headers({"authorization": "Bearer sk-1"})) == "sk-1"
    assert presented_key(Headers({"x-api-key": "sk-2"})) == "sk-2"
    assert presented_key(Headers({"authorization": "Basic abc"})) is None


def test_open_gateway_master_key_and_virtual_keys() -> None:
    assert KeyStore(AuthSettings()).authenticate(Headers({})).role == "admin"
    keys = store()
    assert keys.authenticate(Headers({"x-api-key": "sk-master"})).role == "admin"
    token = key_hash(keys.secret, "sk-igw-abc")
    keys.records[token] = KeyRecord(token=token, models=["m"], created_at=0)
    principal = keys.authenticate(Headers({"authorization": "Bearer sk-igw-abc"}))
    assert principal.role == "user" and principal.token == token
    principal.allow_model("m")
    with pytest.raises(PermissionDenied):
        principal.allow_model("other")
    with pytest.raises(PermissionDenied):
        principal.require("viewer")


@pytest.mark.parametrize(
    ("change", "code"),
    [({"blocked": True}, "key_revoked"), ({"expires": 1.0}, "key_expired")],
)
def test_revoked_and_expired(change: dict[str, object], code: str) -> None:
    keys = store()
    token = key_hash(keys.secret, "sk-igw-x")
    keys.records[token] = KeyRecord(token=token, created_at=0).model_copy(update=change)
    with pytest.raises(AuthenticationFailed) as caught:
        keys.authenticate(Headers({"x-api-key": "sk-igw-x"}))
    assert caught.value.code == code
    with pytest.raises(AuthenticationFailed):
        keys.authenticate(Headers({"x-api-key": "sk-igw-unknown"}))


def test_the_hash_depends_on_the_server_secret() -> None:
    one = KeyStore(AuthSettings(master_key=SecretStr("a")))
    two = KeyStore(AuthSettings(master_key=SecretStr("b")))
    assert key_hash(one.secret, "k") != key_hash(two.secret, "k")
    assert len(key_hash(one.secret, "k")) == 64


def test_durations() -> None:
    assert duration_s("30m", "d") == 1800 and duration_s("7d", "d") == 7 * 86400
    assert duration_s("0.5s", "d") == 0.5
    with pytest.raises(InvalidRequest):
        duration_s("a week", "duration")


def test_an_empty_master_key_leaves_the_gateway_open() -> None:
    assert AuthSettings(master_key="").master_key is None
    assert KeyStore(AuthSettings(master_key="")).open
