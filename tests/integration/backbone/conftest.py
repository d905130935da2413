from __future__ import annotations

import openai
import pytest

from tests.stack import Stack


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    """The official SDK with strict response validation, pointed at the gateway."""
    return openai.OpenAI(
        base_url=f"{stack.base_url}/v1",
        api_key="unused",
        max_retries=0,
        timeout=30,
        _strict_response_validation=True,
    )
