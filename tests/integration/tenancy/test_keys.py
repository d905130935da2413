"""Virtual keys through real NATS: a gateway with a master key, the key admin API,
roles, model permissions, revocation, expiry, and keys never leaking."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.stack import Stack
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

MASTER = "sk-master-test-0123456789"
USER: list[Any] = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-keys")
    stack = Stack(root)
    stack.overrides = {"auth": {"master_key": MASTER}}
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop_all()


def admin(stack: Stack, method: str, path: str, key: str = MASTER, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.request(method, f"{stack.base_url}{path}", headers=headers, timeout=10, **kw)


def new_key(stack: Stack, by: str = MASTER, **fields: Any) -> str:
    reply = admin(stack, "POST", "/key/generate", key=by, json=fields)
    assert reply.status_code == 200, reply.text
    key = reply.json()["key"]
    assert key.startswith("sk-igw-") and len(key) > 40
    return str(key)


def sdk(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0)


def test_requests_need_a_valid_key(keyed: Stack) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(keyed, "sk-igw-not-a-real-key").chat.completions.create(model="sim", messages=USER)
    missing = httpx.post(f"{keyed.base_url}/v1/chat/completions", json={}, timeout=10)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    for bad in ("sk-igw-canary-5f0c1e", "' OR 1=1 --", "sk-igw-x'; DROP TABLE requests; --"):
        refused = httpx.post(
            f"{keyed.base_url}/v1/chat/completions",
            headers={"authorization": f"Bearer {bad}"},
            json={"model": "sim", "messages": USER},
            timeout=10,
        )
        assert refused.status_code == 401 and bad not in refused.text
        assert refused.json()["error"]["code"] == "invalid_api_key"
    by_header = httpx.post(
        f"{keyed.base_url}/v1/chat/completions",
        headers={"x-api-key": MASTER},
        json={"model": "sim", "messages": USER},
        timeout=10,
    )
    assert by_header.status_code == 200


def test_a_key_for_some_models(keyed: Stack) -> None:
    key = new_key(keyed, models=["sim"], duration="1h", key_alias="app-1")
    client = sdk(keyed, key)
    assert client.chat.completions.create(model="sim", messages=USER).choices
    assert [m.id for m in client.models.list()] == ["sim"]
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="sim-slow", messages=USER)
    info = admin(keyed, "GET", "/key/info", key=key).json()
    assert info["info"]["models"] == ["sim"] and info["info"]["key_alias"] == "app-1"
    assert info["info"]["expires"] is not None

    def settled() -> bool:  # the one request's cost lands on the key, nothing stays held
        now = admin(keyed, "GET", "/key/info", key=key).json()["info"]
        return now["spend"] > 0 and now["spend_held"] == 0

    wait_until(settled, 30, "the key's spend to settle")


def test_roles_and_minting_only_subsets(keyed: Stack) -> None:
    viewer = new_key(keyed, role="viewer")
    assert admin(keyed, "POST", "/key/generate", key=viewer, json={}).status_code == 403
    assert admin(keyed, "GET", "/key/list", key=viewer).status_code == 200
    assert admin(keyed, "GET", "/api/v1/providers/status", key=viewer).status_code == 200

    user = new_key(keyed, models=["sim", "sim-slow"], rpm_limit=10)
    assert admin(keyed, "GET", "/key/list", key=user).status_code == 403
    stronger = admin(keyed, "POST", "/key/generate", key=user, json={"role": "viewer"})
    assert stronger.status_code == 403
    wider = admin(
        keyed, "POST", "/key/generate", key=user, json={"models": ["sim-500"], "rpm_limit": 5}
    )
    assert wider.status_code == 403
    child = new_key(keyed, by=user, models=["sim"], rpm_limit=5)
    assert sdk(keyed, child).chat.completions.create(model="sim", messages=USER).choices


def test_revoked_and_expired_keys_are_refused(keyed: Stack) -> None:
    revoked = new_key(keyed)
    assert sdk(keyed, revoked).chat.completions.create(model="sim", messages=USER).choices
    deleted = admin(keyed, "POST", "/key/delete", json={"keys": [revoked]})
    assert deleted.status_code == 200 and len(deleted.json()["deleted_keys"]) == 1
    with pytest.raises(openai.AuthenticationError):
        sdk(keyed, revoked).chat.completions.create(model="sim", messages=USER)

    blocked = new_key(keyed)
    assert admin(keyed, "POST", "/key/update", json={"key": blocked, "blocked": True}).is_success
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(keyed, blocked).chat.completions.create(model="sim", messages=USER)
    assert caught.value.body["code"] == "key_revoked"  # type: ignore[index]

    short = new_key(keyed, duration="0.5s")
    deadline = time.monotonic() + 5
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = admin(keyed, "GET", "/v1/models", key=short).status_code
    assert status == 401


def test_keys_never_appear_in_logs_or_usage_rows(keyed: Stack) -> None:
    canary = new_key(keyed, models=["sim"])
    sdk(keyed, canary).chat.completions.create(model="sim", messages=USER)
    with pytest.raises(openai.PermissionDeniedError):
        sdk(keyed, canary).chat.completions.create(model="sim-500", messages=USER)
    token = admin(keyed, "GET", "/key/info", key=canary).json()["key"]
    deadline, rows = time.monotonic() + 30, []
    while time.monotonic() < deadline and not rows:
        rows = keyed.sql(f"SELECT key_id FROM requests WHERE key_id = '{token}'")
    assert rows and rows[0][0] == token
    assert canary not in keyed.logs() and MASTER not in keyed.logs()
    assert canary not in str(keyed.sql("SELECT * FROM requests"))


def test_the_seed_client_flow_with_users_and_teams(keyed: Stack) -> None:
    team = admin(keyed, "POST", "/team/new", json={"team_id": "research", "max_budget": 50})
    assert team.status_code == 200, team.text
    user = admin(
        keyed, "POST", "/user/new", json={"user_email": "john@example.com", "team_id": "research"}
    ).json()
    user_id = user["user_id"]
    key = new_key(keyed, user_id=user_id, models=["sim", "sim-echo"], duration="7d")

    reply = sdk(keyed, key).chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "What is machine learning?"}]
    )
    assert reply.choices[0].message.content

    key_info = admin(keyed, "GET", "/key/info", key=key).json()["info"]
    assert key_info["user_id"] == user_id and key_info["team_id"] == "research"
    assert reply.usage is not None
    cost = (reply.usage.prompt_tokens * 0.15 + reply.usage.completion_tokens * 0.60) / 10**6

    def settled() -> bool:
        spends = (
            admin(keyed, "GET", "/key/info", key=key).json()["info"]["spend"],
            admin(keyed, "GET", "/user/info", key=key).json()["user_info"]["spend"],
            admin(keyed, "GET", "/team/info", key=key).json()["team_info"]["spend"],
        )
        return all(s == pytest.approx(cost, rel=1e-9) for s in spends)

    wait_until(settled, 30, "the key's spend to settle")
    own = admin(keyed, "GET", "/user/info", key=key).json()
    assert own["user_id"] == user_id and own["keys"] == [key_info["token"]]
    members = admin(keyed, "GET", "/team/info", key=key, params={"team_id": "research"}).json()
    assert members["members"] == [user_id] and members["team_info"]["max_budget"] == 50
    assert members["team_info"]["spend"] == pytest.approx(cost, rel=1e-9)
    assert own["user_info"]["spend"] == pytest.approx(cost, rel=1e-9)

    stranger = new_key(keyed)
    assert (
        admin(keyed, "GET", "/user/info", key=stranger, params={"user_id": user_id}).status_code
        == 403
    )
    assert admin(keyed, "POST", "/user/new", key=key, json={}).status_code == 403
    assert admin(keyed, "POST", "/key/generate", json={"user_id": "nobody"}).status_code == 404


def cli(stack: Stack, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args, "--url", stack.base_url, "--key", MASTER],
        env=stack.env(),
        capture_output=True,
        cwd=stack.root,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    return json.loads(done.stdout)


def test_the_admin_cli(keyed: Stack) -> None:
    team = cli(keyed, "teams", "create", "--team-id", "cli-team")
    assert team["team_id"] == "cli-team"
    user = cli(keyed, "users", "create", "--email", "ann@example.com", "--team-id", "cli-team")
    made = cli(
        keyed, "keys", "create", "--models", "sim", "--duration", "1d", "--user-id",
        user["user_id"], "--max-budget", "5", "--budget-duration", "30d",
        "--max-parallel-requests", "2",
    )  # fmt: skip
    assert made["key"].startswith("sk-igw-") and made["team_id"] == "cli-team"
    assert made["max_budget"] == 5 and made["budget_duration"] == "30d"
    assert made["max_parallel_requests"] == 2
    assert sdk(keyed, made["key"]).chat.completions.create(model="sim", messages=USER).choices
    key_info = cli(keyed, "keys", "info", made["key"])["info"]
    assert key_info["models"] == ["sim"] and key_info["spend"] >= 0
    assert key_info["budget_reset_at"] is not None
    assert made["token"] in cli(keyed, "keys", "list")["keys"]
    assert cli(keyed, "users", "info", user["user_id"])["keys"] == [made["token"]]
    assert cli(keyed, "teams", "info", "cli-team")["members"] == [user["user_id"]]
    cli(keyed, "keys", "revoke", made["token"])
    with pytest.raises(openai.AuthenticationError):
        sdk(keyed, made["key"]).chat.completions.create(model="sim", messages=USER)

    refused = subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", "list", "--url", keyed.base_url,
         "--key", "sk-igw-wrong"],
        env=keyed.env(), capture_output=True, cwd=keyed.root, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 1 and b"401" in refused.stderr
