"""Built-in provider adapters; importing this package registers them."""

from services.workers.adapters import anthropic, azure, bedrock, gemini, ollama, openai_compat

__all__ = ["anthropic", "azure", "bedrock", "gemini", "ollama", "openai_compat"]
