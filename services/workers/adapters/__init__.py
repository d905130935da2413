"""Built-in provider adapters; importing this package registers them."""

from services.workers.adapters import openai_compat

__all__ = ["openai_compat"]
