"""Virtual keys are stored and looked up by a keyed hash, never by the key."""

from __future__ import annotations

import hashlib
import hmac

from services.runtime.settings import AuthSettings

__all__ = ["hasher", "key_hash"]


def hasher(settings: AuthSettings) -> bytes:
    """The HMAC secret for key hashes: ``key_secret``, else derived from the master key."""
    if settings.key_secret is not None:
        return settings.key_secret.get_secret_value().encode()
    master = settings.master_key.get_secret_value() if settings.master_key else ""
    return hmac.new(master.encode(), b"igw virtual key hashes", hashlib.sha256).digest()


def key_hash(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()
