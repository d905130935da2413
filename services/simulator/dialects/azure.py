"""Azure OpenAI, as the simulator speaks it: the OpenAI format on deployment URLs.

* ``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` and
  ``.../embeddings``; the deployment in the path names the model (and carries the
  simulator behaviour, percent-encoded), a ``model`` in the body is ignored.
* ``api-version`` is required (404 ``Resource not found`` without it, as Azure
  answers), and so is an ``api-key`` header or an ``Authorization: Bearer`` token
  (401 otherwise).
* Errors: ``{"error": {"code", "message", ...}}`` like OpenAI's, with Azure's
  string codes (``"429"`` and the like) for the service's own refusals.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import orjson

from services.simulator.dialect import Call, EmbedRequest, Route, SimError, SimRequest
from services.simulator.dialects.openai import OpenAIDialect, parse_openai_chat, parse_openai_embed

_NO_KEY = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API endpoint "
    "for your resource."
)


def _check(call: Call) -> None:
    if not call.query.get("api-version"):
        raise SimError(404, "Resource not found", "not_found", code="404")
    if not call.headers.get("api-key") and not call.headers.get("authorization"):
        raise SimError(401, _NO_KEY, "authentication", code="401")


def _with_model(call: Call, body: Any) -> Any:
    if isinstance(body, dict):
        return {**body, "model": call.params["deployment"]}
    return body


class AzureDialect(OpenAIDialect):
    name = "azure"
    routes: tuple[Route, ...] = (
        Route(
            "POST",
            re.compile(r"/openai/deployments/(?P<deployment>[^/]+)/chat/completions"),
            "chat",
        ),
        Route("POST", re.compile(r"/openai/deployments/(?P<deployment>[^/]+)/embeddings"), "embed"),
    )

    def parse_chat(self, call: Call, body: Any) -> SimRequest:
        _check(call)
        return parse_openai_chat(call, _with_model(call, body))

    def parse_embed(self, call: Call, body: Any) -> EmbedRequest:
        _check(call)
        request = parse_openai_embed(call, _with_model(call, body))
        return replace(request, model=call.params["deployment"])

    def error(self, error: SimError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if error.code in ("401", "404"):
            body = orjson.dumps({"error": {"code": error.code, "message": error.message}})
            return error.status, [], body
        return super().error(error)
