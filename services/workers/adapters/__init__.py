"""Built-in provider adapters; importing this package registers them."""

from services.workers.adapters import azure, openai_compat

__all__ = ["azure", "openai_compat"]
