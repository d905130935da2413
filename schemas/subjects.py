"""Names on the bus: streams, subjects, consumers, KV buckets.

Every service takes its names from here; nothing else spells a subject.
Tokens that go into subjects (provider, deployment, ids) must match
``SUBJECT_TOKEN`` so they never contain dots or wildcards.
"""

from __future__ import annotations

import re
from typing import Final, Literal

SUBJECT_TOKEN: Final = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

Priority = Literal["interactive", "batch"]
PRIORITIES: Final[tuple[Priority, ...]] = ("interactive", "batch")

# Requests: ingress -> router (work queue, file storage).
STREAM_REQUESTS: Final = "IGW_REQUESTS"
REQUESTS_WILDCARD: Final = "igw.req.>"

# Routed attempts: router -> provider workers (work queue).
STREAM_WORK: Final = "IGW_WORK"
WORK_WILDCARD: Final = "igw.work.>"

# Usage events: workers -> accounting (limits retention, dedup window).
STREAM_USAGE: Final = "IGW_USAGE"
USAGE_WILDCARD: Final = "igw.usage.>"

# Async batch: submissions, status, results, cancels, and the workers' replies
# to batch requests (captured, so they survive a restart of the batch runner).
STREAM_BATCH: Final = "IGW_BATCH"
BATCH_WILDCARD: Final = "igw.batch.>"
BATCH_SUBMIT: Final = "igw.batch.submit"
BATCH_REPLIES: Final = "igw.batch.reply.>"
BATCH_CANCELS: Final = "igw.batch.cancel.*"

# Core NATS subjects (no stream).
CANCEL_WILDCARD: Final = "igw.cancel.*"
ACCOUNTING_SQL: Final = "igw.accounting.sql"

# Durable consumers.
CONSUMER_ROUTER: Final = "router"
CONSUMER_ACCOUNTING: Final = "accounting"
CONSUMER_BATCH_SUBMIT: Final = "batch-submit"
CONSUMER_BATCH_REPLIES: Final = "batch-replies"
CONSUMER_BATCH_CANCELS: Final = "batch-cancels"

# KV buckets (each is backed by a stream named KV_<bucket>).
KV_ATTEMPTS: Final = "igw_attempts"
KV_ATTEMPTS_STREAM: Final = f"KV_{KV_ATTEMPTS}"
KV_KEYS: Final = "igw_keys"
"""Virtual key records, by the key's keyed hash."""
KV_KEYS_STREAM: Final = f"KV_{KV_KEYS}"
KV_CACHE: Final = "igw_cache"
"""Cached non-streaming answers, by a hash of the model and the request body."""
KV_CACHE_STREAM: Final = f"KV_{KV_CACHE}"
KV_IDEMPOTENCY: Final = "igw_idempotency"
"""Answers by Idempotency-Key, under a hash of the caller and the key."""
KV_IDEMPOTENCY_STREAM: Final = f"KV_{KV_IDEMPOTENCY}"
KV_SPEND: Final = "igw_spend"
"""Budget spend and holds per key, user and team; parallel-request slots per key."""
KV_SPEND_STREAM: Final = f"KV_{KV_SPEND}"
KV_LIMITS: Final = "igw_limits"
"""Per-minute request and token counters per key, team, model and the whole gateway."""
KV_LIMITS_STREAM: Final = f"KV_{KV_LIMITS}"
KV_BATCHES: Final = "igw_batches"
"""Batch state (``batch.<id>``) and finished items (``done.<id>.<n>``)."""
KV_BATCHES_STREAM: Final = f"KV_{KV_BATCHES}"
KV_HEALTH: Final = "igw_health"
"""Circuit-breaker state per deployment, shared by router replicas (key: deployment)."""

# Object stores (each is backed by a stream named OBJ_<bucket>).
OBJ_FILES: Final = "igw_files"
"""Files uploaded through ``/v1/files``, by file id; the File object is in each
object's headers (see ``schemas.files``)."""
OBJ_FILES_STREAM: Final = f"OBJ_{OBJ_FILES}"

ROUTER_STATUS: Final = "igw.router.status"
"""Request/reply: any router answers with per-deployment health (``DeploymentStatus`` list)."""

# Headers.
HEADER_MSG_ID: Final = "Nats-Msg-Id"
HEADER_REPLY: Final = "Igw-Reply"


def request_subject(priority: Priority) -> str:
    return f"igw.req.{priority}"


def work_subject(provider: str, deployment: str) -> str:
    return f"igw.work.{provider}.{deployment}"


def work_filter(provider: str) -> str:
    return f"igw.work.{provider}.>"


def worker_consumer(provider: str) -> str:
    return f"worker-{provider}"


def reply_wildcard(ingress_id: str) -> str:
    return f"igw.chunks.{ingress_id}.*"


def reply_subject(ingress_id: str, request_id: str) -> str:
    """Token chunks and the terminal event for one request, back to its ingress."""
    return f"igw.chunks.{ingress_id}.{request_id}"


def cancel_subject(request_id: str) -> str:
    return f"igw.cancel.{request_id}"


def usage_subject(provider: str) -> str:
    return f"igw.usage.{provider}"


def attempt_msg_id(request_id: str, attempt: int) -> str:
    """``Nats-Msg-Id`` of a work item and of its usage event: one per attempt."""
    return f"{request_id}:{attempt}"


def retry_msg_id(request_id: str, attempt: int) -> str:
    """``Nats-Msg-Id`` of a request handed back for attempt ``attempt`` (stored once)."""
    return f"{request_id}:retry:{attempt}"


def attempt_key(request_id: str, attempt: int) -> str:
    return f"{request_id}.{attempt}"


def batch_status_subject(batch_id: str) -> str:
    return f"igw.batch.status.{batch_id}"


def batch_results_subject(batch_id: str) -> str:
    return f"igw.batch.results.{batch_id}"


def batch_reply_subject(batch_id: str, index: int) -> str:
    """Where a worker answers item ``index`` of a batch (stored by IGW_BATCH)."""
    return f"igw.batch.reply.{batch_id}.{index}"


def is_batch_reply(subject: str) -> bool:
    return subject.startswith("igw.batch.reply.")


def batch_cancel_subject(batch_id: str) -> str:
    return f"igw.batch.cancel.{batch_id}"


def batch_request_id(batch_id: str, index: int) -> str:
    return f"{batch_id}-{index}"


def is_subject_token(value: str) -> bool:
    return bool(SUBJECT_TOKEN.match(value))
