"""Built-in provider adapters; importing this package registers them."""

from services.workers.adapters import azure, ollama, openai_compat

__all__ = ["azure", "ollama", "openai_compat"]
