"""Authentication of requests to AWS deployments (Bedrock), with botocore's SigV4.

Which credentials a deployment uses, in order:

1. ``aws_access_key_id`` + ``aws_secret_access_key`` (+ ``aws_session_token``) from
   the deployment settings: every request is signed with SigV4;
2. else ``api_key``: a Bedrock API key, sent as ``Authorization: Bearer <key>``;
3. else botocore's default credential chain (environment, shared config and
   credentials files, SSO, container and instance roles), resolved once per
   deployment at its first request and cached (also when it finds nothing); the
   requests are signed with what it returns (refreshed by botocore when temporary
   credentials near their expiry, off the event loop).

Signing covers the method, URL, body and the headers passed in; the returned
headers add ``X-Amz-Date``, ``X-Amz-Security-Token`` (temporary credentials) and
``Authorization``. Secrets never appear in error messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.session import Session

from services.runtime.errors import UpstreamAuthFailed
from services.runtime.settings import ModelDeployment


def _secret(value: Any) -> str | None:
    return None if value is None else (str(value.get_secret_value()) or None)


def _default_chain() -> Any:
    return Session().get_credentials()


class AwsAuth:
    """Request signing for one adapter; caches default-chain credentials per deployment."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._chain: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def headers(
        self, dep: ModelDeployment, url: str, body: bytes, headers: Mapping[str, str]
    ) -> dict[str, str]:
        """``headers`` plus the authentication headers of one POST of ``body`` to ``url``."""
        key_id = _secret(dep.aws_access_key_id)
        secret = _secret(dep.aws_secret_access_key)
        if key_id or secret:
            if not (key_id and secret):
                raise UpstreamAuthFailed(
                    f"deployment {dep.deployment} sets only one of aws_access_key_id and "
                    "aws_secret_access_key"
                )
            credentials: Any = Credentials(key_id, secret, _secret(dep.aws_session_token))
        elif dep.api_key is not None:
            return {**headers, "authorization": f"Bearer {dep.api_key.get_secret_value()}"}
        else:
            credentials = await self._resolve(dep)
        return self._sign(dep, await _frozen(credentials), url, body, headers)

    async def _resolve(self, dep: ModelDeployment) -> Any:
        name = dep.deployment
        if name not in self._chain:
            async with self._lock:
                if name not in self._chain:
                    self._chain[name] = await asyncio.to_thread(_default_chain)
        credentials = self._chain[name]
        if credentials is None:
            raise UpstreamAuthFailed(
                f"deployment {name} has no AWS credentials: set aws_access_key_id and "
                "aws_secret_access_key, an api_key, or configure the default AWS credential chain"
            )
        return credentials

    def _sign(
        self,
        dep: ModelDeployment,
        credentials: Any,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
    ) -> dict[str, str]:
        request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
        SigV4Auth(credentials, self._service, dep.region).add_auth(request)
        return {str(k): str(v) for k, v in request.headers.items()}


async def _frozen(credentials: Any) -> Any:
    """A consistent snapshot; refreshing temporary credentials may do I/O, so it runs in a
    thread."""
    if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
        return await asyncio.to_thread(credentials.get_frozen_credentials)
    return credentials.get_frozen_credentials()
