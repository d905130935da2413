"""Run one routed attempt: call the upstream through its adapter, send the
client's chunks and terminal event, and describe what it consumed.

``run_attempt`` never raises a ``GatewayError``: failures become an error
terminal event and an error usage record. It raises ``CancelledError`` when
its task is cancelled (client gone); ``Progress`` still tells what happened
up to then, so the caller can account for the tokens already generated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

import orjson

from schemas.bus import ErrorInfo, ReplyKind, ReplyMeta, UsageEvent, UsageStatus, WorkItem
from schemas.openai_chat import Usage
from services.runtime.errors import (
    ContentFiltered,
    DeadlineExceeded,
    GatewayError,
    UpstreamTimeout,
)
from services.runtime.pricing import cost_usd
from services.runtime.settings import ModelDeployment
from services.runtime.tokenizer import count_prompt
from services.workers.body import upstream_body
from services.workers.protocol import ProviderAdapter, UpstreamCall
from services.workers.upstream_errors import refine

SendReply = Callable[[ReplyMeta, bytes], Awaitable[None]]
Retry = Callable[[ErrorInfo], Awaitable[bool]]
Hedge = Callable[[], Awaitable[bool]]
"""Ask for a second attempt beside a slow one; True if it was requested."""
"""Hand a failed attempt back for another one; True if it was (see ``run_attempt``)."""

# Chunks published before yielding to the event loop, so the NATS client
# writes them at once: the role chunk and the first token decide time to
# first token; later chunks of a burst may share a write.
FLUSH_FIRST_CHUNKS = 2


class _Origin(TypedDict):
    request_id: str
    attempt: int
    delivery: int
    provider: str
    deployment: str


def _meta(
    kind: ReplyKind,
    seq: int,
    origin: _Origin,
    finish_reason: str | None = None,
    error: ErrorInfo | None = None,
    usage: Usage | None = None,
) -> ReplyMeta:
    return ReplyMeta(
        kind=kind, seq=seq, finish_reason=finish_reason, error=error, usage=usage, **origin
    )


@dataclass(slots=True)
class Progress:
    started: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)
    first_output_mono: float | None = None
    output_chunks: int = 0
    seq: int = 0
    usage: Usage | None = None
    finish_reason: str | None = None
    sent_output: bool = False
    usage_estimated: bool = False
    hedged: bool = False
    response_model: str | None = None
    response_id: str | None = None

    def mark_output(self) -> None:
        if self.first_output_mono is None:
            self.first_output_mono = time.monotonic()
        self.output_chunks += 1


async def run_attempt(
    item: WorkItem,
    deployment: ModelDeployment,
    adapter: ProviderAdapter,
    send: SendReply,
    progress: Progress,
    delivery: int = 1,
    retry: Retry | None = None,
    hedge: Hedge | None = None,
) -> UsageEvent:
    """Run one attempt. A retryable failure before anything reached the client is
    offered to ``retry`` first; when it takes it, the client hears nothing of this
    attempt (the next one answers) and only the usage event records the failure."""
    req, route = item.request, item.route
    remaining = req.deadline - time.time()
    if deployment.timeout_s is not None:
        remaining = min(remaining, deployment.timeout_s)
    base = _Origin(
        request_id=req.request_id,
        attempt=route.attempt,
        delivery=delivery,
        provider=route.provider,
        deployment=route.deployment,
    )
    timer = _arm_hedge(route.hedge_after_s, hedge, progress)
    try:
        if remaining <= 0:
            raise DeadlineExceeded("the request's deadline passed before an upstream call")
        call = UpstreamCall(
            deployment=deployment,
            body=upstream_body(req.body, route.upstream_model, req.stream),
            stream=req.stream,
            timeout_s=remaining,
        )
        try:
            async with asyncio.timeout(remaining):
                if req.operation == "embeddings":
                    await _embed(call, adapter, send, progress, base)
                elif req.stream:
                    await _stream(call, adapter, send, progress, base, req.include_usage)
                else:
                    await _complete(call, adapter, send, progress, base)
        except TimeoutError:
            raise UpstreamTimeout(
                f"deployment {route.deployment} did not finish within {remaining:.1f}s"
            ) from None
    except GatewayError as raised:
        exc = refine(raised)
        info = exc.to_info()
        if progress.hedged and not progress.sent_output:
            # a hedge is racing this attempt: it answers the client, win or lose
            return usage_event(item, deployment, progress, "error", info, final=False)
        again = exc.retryable or exc.fallback
        if retry is not None and again and not progress.sent_output and await retry(info):
            return usage_event(item, deployment, progress, "error", info, final=False)
        await send(_meta("terminal", progress.seq, base, error=info), b"")
        return usage_event(item, deployment, progress, "error", info)
    finally:
        if timer is not None:
            timer.cancel()
    return usage_event(item, deployment, progress, "ok", None)


def _arm_hedge(
    after_s: float | None, hedge: Hedge | None, progress: Progress
) -> asyncio.Task[None] | None:
    """After ``after_s`` without a first token, ask for a hedge attempt elsewhere."""
    if after_s is None or hedge is None:
        return None

    async def fire() -> None:
        await asyncio.sleep(after_s)
        if progress.first_output_mono is None and not progress.sent_output:
            progress.hedged = await hedge()

    return asyncio.create_task(fire())


async def _complete(
    call: UpstreamCall,
    adapter: ProviderAdapter,
    send: SendReply,
    progress: Progress,
    base: _Origin,
) -> None:
    result = await adapter.complete(call)
    if result.finish_reason == "content_filter" and not _has_content(result.response):
        raise ContentFiltered(
            f"deployment {base['deployment']} refused the request (content filter)"
        )
    progress.mark_output()
    progress.usage = result.usage
    progress.finish_reason = result.finish_reason
    progress.response_model = result.response.get("model")
    progress.response_id = result.response.get("id")
    progress.sent_output = True
    payload = result.raw if result.raw is not None else orjson.dumps(result.response)
    meta = _meta("terminal", progress.seq, base, result.finish_reason, usage=result.usage)
    await send(meta, payload)


def _has_content(response: dict[str, Any]) -> bool:
    choices = response.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    return bool(isinstance(message, dict) and (message.get("content") or message.get("tool_calls")))


async def _embed(
    call: UpstreamCall,
    adapter: ProviderAdapter,
    send: SendReply,
    progress: Progress,
    base: _Origin,
) -> None:
    result = await adapter.embed(call)
    progress.mark_output()
    progress.usage = result.usage
    progress.sent_output = True
    payload = result.raw if result.raw is not None else orjson.dumps(result.response)
    await send(_meta("terminal", progress.seq, base, usage=result.usage), payload)


async def _stream(
    call: UpstreamCall,
    adapter: ProviderAdapter,
    send: SendReply,
    progress: Progress,
    base: _Origin,
    include_usage: bool,
) -> None:
    events = adapter.stream(call)
    last: dict[str, Any] | None = None
    try:
        async for event in events:
            last = event.chunk
            if progress.response_model is None:
                progress.response_model = last.get("model")
                progress.response_id = last.get("id")
            if event.has_output:
                progress.mark_output()
            if event.usage is not None:
                progress.usage = event.usage
            if event.finish_reason is not None:
                progress.finish_reason = event.finish_reason
            if not include_usage and event.usage is not None and not event.chunk.get("choices"):
                continue  # the usage-only chunk the client did not ask for
            payload = event.raw if event.raw is not None else orjson.dumps(event.chunk)
            await send(_meta("chunk", progress.seq, base), payload)
            progress.seq += 1
            if progress.seq <= FLUSH_FIRST_CHUNKS:
                await asyncio.sleep(0)  # let the first chunks leave now, not after a burst
            progress.sent_output = True
    finally:
        await events.aclose()
    if progress.usage is None and last is not None:
        # The upstream sent no usage (some servers ignore stream_options): estimate it,
        # so the client that asked for usage gets it and accounting flags the estimate.
        progress.usage = Usage(
            prompt_tokens=(prompt := count_prompt(call.body, call.deployment.model)),
            completion_tokens=progress.output_chunks,
            total_tokens=prompt + progress.output_chunks,
        )
        progress.usage_estimated = True
        if include_usage:
            chunk: dict[str, Any] = {
                k: last[k] for k in ("id", "object", "created", "model") if k in last
            }
            chunk.update(choices=[], usage=progress.usage.model_dump(exclude_none=True))
            await send(_meta("chunk", progress.seq, base), orjson.dumps(chunk))
            progress.seq += 1
    meta = _meta("terminal", progress.seq, base, progress.finish_reason, usage=progress.usage)
    await send(meta, b"")


def usage_event(
    item: WorkItem,
    deployment: ModelDeployment,
    progress: Progress,
    status: UsageStatus,
    error: ErrorInfo | None,
    final: bool = True,
) -> UsageEvent:
    req, route = item.request, item.route
    usage = progress.usage
    estimated = progress.usage_estimated or (usage is None and progress.output_chunks > 0)
    if usage is not None:
        prompt, completion, cached = (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
        )
    elif progress.output_chunks > 0:
        prompt = count_prompt(req.body, route.upstream_model)
        completion, cached = progress.output_chunks, 0
    else:
        prompt = completion = cached = 0
    now = time.monotonic()
    ttft = None
    if progress.first_output_mono is not None:
        ttft = (progress.first_output_mono - progress.started_mono) * 1000
    return UsageEvent(
        request_id=req.request_id,
        attempt=route.attempt,
        ts=progress.started,
        key_id=req.key_id,
        tenant=req.tenant,
        user_id=req.user_id,
        model=req.model,
        provider=route.provider,
        deployment=route.deployment,
        upstream_model=route.upstream_model,
        priority=req.priority,
        stream=req.stream,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        usage_estimated=estimated,
        cost_usd=cost_usd(deployment.price, prompt, completion, cached),
        latency_ms=(now - progress.started_mono) * 1000,
        ttft_ms=ttft,
        status=status,
        error_type=error.code or error.type if error else None,
        http_status=error.status if error else (499 if status == "cancelled" else 200),
        finish_reason=progress.finish_reason,
        final=final,
        batch_id=req.batch_id,
        budget_lease=req.budget_lease,
        budget_lease_hold=req.budget_lease_hold,
    )
