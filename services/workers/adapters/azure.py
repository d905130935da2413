"""Azure OpenAI: the OpenAI wire format on deployment URLs.

``{base_url}/openai/deployments/{deployment}/chat/completions?api-version=...``
(and ``/embeddings``), authenticated by an ``api-key`` header. The deployment's
``model`` setting is the Azure deployment name; ``api_version`` is required by
the settings. Responses, streams and errors are OpenAI's, so everything else is
the OpenAI-compatible adapter's.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote, urlencode

from services.workers.adapters.openai_compat import OpenAICompatAdapter
from services.workers.protocol import UpstreamCall
from services.workers.registry import register


@register
class AzureOpenAIAdapter(OpenAICompatAdapter):
    name: ClassVar[str] = "azure"

    def _url(self, call: UpstreamCall, operation: str = "chat/completions") -> str:
        dep = call.deployment
        query = urlencode({"api-version": dep.api_version or ""})
        return f"{dep.base_url}/openai/deployments/{quote(dep.model, safe='')}/{operation}?{query}"

    def _headers(self, call: UpstreamCall) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if call.deployment.api_key is not None:
            headers["api-key"] = call.deployment.api_key.get_secret_value()
        return headers
