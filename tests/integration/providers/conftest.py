"""A gateway with one worker per provider, every provider pointed at the
simulator in its own wire format, for the conformance suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.stack import PRICE, Stack

PROVIDERS = ("openai", "azure", "anthropic", "gemini", "bedrock", "ollama")
EMBEDDING_PROVIDERS = ("openai", "azure", "gemini", "bedrock", "ollama")
NO_TOOL_CHOICE = frozenset({"ollama"})
NO_RETRY_AFTER = frozenset({"bedrock"})
"""Providers that send no retry delay with a rate-limit error."""
"""Providers whose API cannot force a tool call: their tests use a model that decides to call."""
ERROR_FAULTS = ("400", "401", "403", "404", "413", "429", "500", "503", "529")
BEHAVIOURS = {
    "": "sim",
    "-echo": "sim?echo=1&tokens=400",
    "-cut": "sim?fault=cut&fault_after=2",
    "-tools": "sim?tool_call=1",
    "-ectx": "sim?fault=context",
    **{f"-e{code}": f"sim?fault={code}&retry_after=3" for code in ERROR_FAULTS},
}


def provider_fields(provider: str, port: int) -> dict[str, Any]:
    root = f"http://127.0.0.1:{port}"
    fields: dict[str, Any] = {
        "openai": {"base_url": f"{root}/v1"},
        "azure": {"base_url": root, "api_key": "azure-key", "api_version": "2024-10-21"},
        "anthropic": {"base_url": root, "api_key": "anthropic-key"},
        "gemini": {"base_url": root, "api_key": "gemini-key"},
        "bedrock": {
            "base_url": root,
            "region": "us-east-1",
            "aws_access_key_id": "AKIDEXAMPLE",
            "aws_secret_access_key": "bedrock-secret",
        },
        "ollama": {"base_url": root},
    }[provider]
    return fields


def provider_models(port: int) -> list[dict[str, Any]]:
    return [
        {
            "alias": f"{provider}{suffix}",
            "provider": provider,
            "model": upstream,
            "price": PRICE,
            **provider_fields(provider, port),
        }
        for provider in PROVIDERS
        for suffix, upstream in BEHAVIOURS.items()
    ]


@pytest.fixture(scope="module")
def providers_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("igw-providers")
    deployment = Stack(
        root,
        services=(
            "simulator",
            "router",
            *(f"worker-{p}" for p in PROVIDERS),
            "accounting",
            "ingress",
        ),
    )
    deployment.extra_models = provider_models(deployment.sim_port)
    try:
        deployment.start_all()
        yield deployment
    finally:
        deployment.stop_all()


@pytest.fixture(scope="module")
def gateway(providers_stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{providers_stack.base_url}/v1",
        api_key="unused",
        max_retries=0,
        timeout=30,
        _strict_response_validation=True,
    )
