"""Every wire format the simulator speaks, in the order routes are matched."""

from __future__ import annotations

from services.simulator.dialect import Dialect
from services.simulator.dialects.anthropic import AnthropicDialect
from services.simulator.dialects.azure import AzureDialect
from services.simulator.dialects.bedrock import BedrockDialect
from services.simulator.dialects.gemini import GeminiDialect
from services.simulator.dialects.ollama import OllamaDialect
from services.simulator.dialects.openai import OpenAIDialect

DIALECTS: tuple[Dialect, ...] = (
    OpenAIDialect(),
    AzureDialect(),
    OllamaDialect(),
    AnthropicDialect(),
    BedrockDialect(),
    GeminiDialect(),
)

__all__ = ["DIALECTS"]
