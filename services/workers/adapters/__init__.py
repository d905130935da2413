"""Built-in provider adapters; importing this package registers them."""

from services.workers.adapters import anthropic, azure, ollama, openai_compat

__all__ = ["anthropic", "azure", "ollama", "openai_compat"]
