"""The typed settings object every service receives, read once at start-up.

Nothing on the request path reads the environment or a file: services get a
``Settings`` instance and pass the parts they need down.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from schemas.subjects import is_subject_token
from services.runtime.price_table import list_price

KNOWN_PROVIDERS: frozenset[str] = frozenset(
    {"openai", "azure", "anthropic", "gemini", "bedrock", "ollama"}
)
DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "bedrock": "https://bedrock-runtime.{region}.amazonaws.com",
    "ollama": "http://127.0.0.1:11434",
}
"""Where a provider's API lives when a deployment gives no ``base_url`` (Azure has no default)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    request_timeout_s: float = Field(600.0, gt=0, description="default deadline of a request")
    stream_buffer_chunks: int = Field(4096, ge=16, description="per-stream chunk backlog")
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="on SIGTERM, how long in-flight requests and streams may take"
    )
    drain_delay_s: float = Field(
        0.0,
        ge=0,
        description="on SIGTERM, /ready answers 503 this long before the listener closes",
    )


class NatsSettings(_Section):
    url: str = Field(
        "nats://127.0.0.1:4222", description="one server, or a cluster's as a comma-separated list"
    )
    embedded: bool = Field(True, description="`igw up` starts a local nats-server")
    host: str = "127.0.0.1"
    port: int = Field(4222, ge=1, le=65535)
    monitor_port: int = Field(8222, ge=0, le=65535, description="0 disables monitoring")
    store_dir: Path | None = Field(None, description="JetStream store; default <data_dir>/nats")
    connect_timeout_s: float = Field(5.0, gt=0)
    stream_replicas: int = Field(1, ge=1, le=5)

    @property
    def servers(self) -> list[str]:
        """``url`` as the list of servers a client may connect to."""
        return [u.strip() for u in self.url.split(",") if u.strip()]


class BusSettings(_Section):
    duplicate_window_s: float = Field(120.0, gt=0)
    work_ack_wait_s: float = Field(30.0, gt=0)
    work_max_deliver: int = Field(5, ge=1)
    max_ack_pending: int = Field(1024, ge=1)
    usage_max_age_days: float = Field(7.0, gt=0)
    usage_ack_wait_s: float = Field(
        60.0, gt=0, description="usage events held by a crashed accounting process wait this long"
    )
    attempts_ttl_s: float = Field(900.0, gt=0, description="how long finished attempts are kept")


class ClickHouseSettings(_Section):
    dsn: str | None = Field(
        None, description="chdb:///abs/path (embedded) or http(s)://user:pass@host:8123/db"
    )
    database: str = "igw"
    batch_size: int = Field(1000, ge=1)
    flush_interval_ms: int = Field(1000, ge=1)
    query_timeout_s: float = Field(30.0, gt=0)
    max_result_rows: int = Field(10_000, ge=1)
    standby: bool = Field(
        False,
        description="embedded store: a second accounting process waits to take over "
        "when the first exits, instead of failing (see services/accounting/standby.py)",
    )
    ttl_days: int | None = Field(
        None, ge=1, description="requests rows older than this are dropped; None keeps them"
    )
    minute_rollup_ttl_days: int | None = Field(
        35, ge=1, description="per-minute rollups older than this are dropped (hour and day stay)"
    )
    manage_schema: bool = Field(
        True,
        description="accounting applies the migrations and TTLs and repairs the rollups at "
        "start-up; false when the schema is managed outside IGW (deploy/clickhouse/cluster)",
    )
    rollup_check_days: int = Field(
        2,
        ge=0,
        description="at start-up, check the rollups of rows inserted this many days back",
    )


class SimulatorSettings(_Section):
    enabled: Literal["auto", "true", "false"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(8090, ge=1, le=65535)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


class WorkerSettings(_Section):
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(120.0, gt=0, description="longest silence between bytes")
    max_connections: int = Field(512, ge=1)
    max_keepalive: int = Field(128, ge=0)
    shutdown_grace_s: float = Field(
        25.0, ge=0, description="on SIGTERM, how long in-flight attempts may take before a nak"
    )


class AuthSettings(_Section):
    master_key: SecretStr | None = Field(
        None, description="admin key; also IGW_MASTER_KEY. None: the gateway is open"
    )
    key_secret: SecretStr | None = Field(
        None, description="HMAC secret for stored key hashes; default: derived from master_key"
    )

    @field_validator("master_key", "key_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value


class CacheSettings(_Section):
    """Exact-match response cache for non-streaming chat completions (NATS KV)."""

    enabled: bool = Field(
        False, description="cache every eligible answer; a request may opt in or out itself"
    )
    ttl_s: float = Field(3600.0, gt=0, description="how long an answer is served from cache")
    max_entry_bytes: int = Field(1_000_000, ge=1024)


class IdempotencySettings(_Section):
    """``Idempotency-Key`` on chat completions and embeddings (NATS KV).

    A repeat of a request still in flight waits for its answer; if the original is
    still unanswered ``takeover_after_s`` past its deadline (its ingress died), the
    repeat runs the request itself."""

    ttl_s: float = Field(86_400.0, gt=0, description="how long a key's answer is replayed")
    max_response_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="a larger answer is not kept (a repeat runs again)"
    )
    takeover_after_s: float = Field(5.0, ge=0, description="seconds past the original's deadline")


class BatchSettings(_Section):
    """Async batch input: files uploaded to ``/v1/files`` (a JetStream object store)
    and the checks a ``purpose=batch`` file passes before it is accepted."""

    max_file_bytes: int = Field(
        200 * 1024 * 1024, ge=1024, description="largest upload to /v1/files, any purpose (413)"
    )
    max_items: int = Field(50_000, ge=1, description="requests (lines) in one batch input file")
    max_in_flight: int = Field(
        32, ge=1, description="items of one batch waiting for an answer at a time"
    )


class ScopeLimit(_Section):
    rpm: int | None = Field(None, ge=1, description="requests per minute")
    tpm: int | None = Field(None, ge=1, description="tokens per minute (prompt + completion)")


class LimitsSettings(_Section):
    """Rate limits beyond each key's and team's own, and how admission behaves.

    Every limit is shared by all ingress replicas through NATS KV."""

    global_rpm: int | None = Field(None, ge=1, description="requests per minute, whole gateway")
    global_tpm: int | None = Field(None, ge=1, description="tokens per minute, whole gateway")
    models: dict[str, ScopeLimit] = Field(
        default_factory=dict, description="per model alias, across every key"
    )
    store_timeout_s: float = Field(
        0.5, gt=0, description="an unanswered limit check fails closed with 503 after this"
    )
    hold_grace_s: float = Field(
        120.0, ge=0, description="how long a budget hold outlives its request, awaiting usage"
    )
    lease_share: int = Field(
        8,
        ge=0,
        description=(
            "an ingress may lease 1/lease_share of what a key has left, to admit its"
            " requests without a store round trip each; 0 turns leases off"
        ),
    )


class MetricsSettings(_Section):
    """Prometheus ``/metrics`` (and ``/health``) of the router, workers, accounting and
    batcher; the ingress serves ``/metrics`` on its own HTTP port."""

    host: str = "127.0.0.1"
    port: int = Field(
        0, ge=0, le=65535, description="0: not served (`igw up` gives each process port + n)"
    )


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["console", "json"] = "console"
    log_prompts: bool = False


class Price(_Section):
    input_per_mtok: Decimal = Field(Decimal(0), ge=0)
    output_per_mtok: Decimal = Field(Decimal(0), ge=0)
    cached_input_per_mtok: Decimal | None = Field(None, ge=0)


class ModelDeployment(_Section):
    """One alias served by one provider deployment."""

    alias: str = Field(min_length=1, max_length=256)
    provider: str
    deployment: str = Field("", description="unique name; defaults to the alias")
    base_url: str = Field("", description="default: the provider's public API")
    api_key: SecretStr | None = None
    model: str = Field(min_length=1, description="the upstream model name")
    price: Price = Price()
    timeout_s: float | None = Field(None, gt=0, description="overall deadline per attempt")
    owned_by: str = ""
    api_version: str | None = Field(
        None, description="Azure `api-version`; Anthropic `anthropic-version` (default 2023-06-01)"
    )
    region: str | None = Field(None, description="AWS region (Bedrock)")
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    drop_params: bool = Field(
        True, description="drop request parameters the provider does not support (else 400)"
    )
    default_max_tokens: int = Field(
        4096, ge=1, description="max_tokens sent when the client gives none and the API needs one"
    )
    weight: float = Field(1.0, gt=0, description="share of its alias's traffic (weighted)")
    context_window: int | None = Field(
        None, ge=1, description="tokens (prompt + output) it accepts; unknown: any"
    )
    supports_tools: bool = True
    supports_vision: bool = True
    rpm_limit: int | None = Field(None, ge=1, description="requests per minute it may receive")
    tpm_limit: int | None = Field(None, ge=1, description="tokens per minute (estimated)")
    kind: Literal["chat", "embeddings"] = Field(
        "chat", description="embeddings deployments are never chosen for `auto`"
    )

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        if value not in KNOWN_PROVIDERS:
            known = ", ".join(sorted(KNOWN_PROVIDERS))
            raise ValueError(f"unknown provider {value!r}; known providers: {known}")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _provider_fields(self) -> ModelDeployment:
        if not self.base_url:
            default = DEFAULT_BASE_URLS.get(self.provider)
            if default is None:
                raise ValueError(f"provider {self.provider!r} needs a base_url")
            if "{region}" in default:
                if not self.region:
                    raise ValueError(f"provider {self.provider!r} needs a region or a base_url")
                default = default.format(region=self.region)
            object.__setattr__(self, "base_url", default)
        if self.provider == "azure" and not self.api_version:
            raise ValueError("provider 'azure' needs api_version (for example 2024-10-21)")
        if self.provider == "bedrock" and not self.region:
            raise ValueError("provider 'bedrock' needs a region (used to sign requests)")
        return self

    @model_validator(mode="after")
    def _default_price(self) -> ModelDeployment:
        """No ``price`` in config: the shipped list price of the upstream model, if known."""
        if "price" not in self.model_fields_set:
            known = list_price(self.model)
            if known is not None:
                input_rate, output_rate, cached = known
                price = Price(
                    input_per_mtok=input_rate,
                    output_per_mtok=output_rate,
                    cached_input_per_mtok=cached,
                )
                object.__setattr__(self, "price", price)
        return self

    @model_validator(mode="after")
    def _deployment_name(self) -> ModelDeployment:
        name = self.deployment or _slug(self.alias)
        if not is_subject_token(name):
            raise ValueError(f"deployment name {name!r} may only hold letters, digits, '_' and '-'")
        object.__setattr__(self, "deployment", name)
        return self


class AliasRouting(_Section):
    """How one alias chooses among its deployments and where it falls back."""

    strategy: Literal["weighted", "ordered", "lowest_cost", "lowest_latency", "least_in_flight"] = (
        "weighted"
    )
    fallbacks: list[str] = Field(
        default_factory=list, description="aliases tried, in order, when this one's fail"
    )
    retries: int = Field(
        0, ge=0, le=10, description="extra attempts on the same deployments, with backoff"
    )
    hedge: bool = Field(False, description="race a second deployment when the first token is late")
    hedge_after_s: float | None = Field(
        None, gt=0, description="how late is late; default: the deployment's p95 TTFT"
    )


class AutoRouting(_Section):
    """The ``auto`` model: any healthy chat deployment, by a latency and cost score."""

    enabled: bool = True
    alias: str = "auto"
    latency_weight: float = Field(0.6, ge=0)
    cost_weight: float = Field(0.4, ge=0)
    aliases: list[str] = Field(
        default_factory=list, description="the aliases `auto` chooses among; empty: all"
    )


class RoutingSettings(_Section):
    max_attempts: int = Field(
        3, ge=1, le=20, description="attempts per request, fallbacks and retries included"
    )
    backoff_base_s: float = Field(0.25, ge=0, description="first retry delay; doubles, jittered")
    backoff_max_s: float = Field(8.0, ge=0)
    retry_after_max_s: float = Field(
        10.0, ge=0, description="a longer Retry-After goes to the client instead of waiting"
    )
    max_queue_wait_s: float = Field(
        30.0, ge=0, description="how long a request waits for capacity before a 429"
    )
    breaker_window: int = Field(20, ge=2, description="recent outcomes per deployment")
    breaker_min_calls: int = Field(10, ge=1, description="outcomes needed before it can open")
    breaker_error_rate: float = Field(0.5, gt=0, le=1, description="error share that opens it")
    breaker_cooldown_s: float = Field(30.0, gt=0, description="open time before one probe")
    aliases: dict[str, AliasRouting] = Field(default_factory=dict)
    auto: AutoRouting = AutoRouting()

    def for_alias(self, alias: str) -> AliasRouting:
        return self.aliases.get(alias) or _DEFAULT_ROUTING


_DEFAULT_ROUTING = AliasRouting()


class Settings(_Section):
    data_dir: Path = Path(".igw")
    server: ServerSettings = ServerSettings()
    nats: NatsSettings = NatsSettings()
    bus: BusSettings = BusSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    workers: WorkerSettings = WorkerSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    cache: CacheSettings = CacheSettings()
    auth: AuthSettings = AuthSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    limits: LimitsSettings = LimitsSettings()
    batch: BatchSettings = BatchSettings()
    routing: RoutingSettings = RoutingSettings()
    models: list[ModelDeployment] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_deployments(self) -> Settings:
        seen: set[str] = set()
        for model in self.models:
            if model.deployment in seen:
                raise ValueError(f"deployment name {model.deployment!r} is used twice")
            seen.add(model.deployment)
        aliases = {m.alias for m in self.models}
        for alias, rules in self.routing.aliases.items():
            for name in (alias, *rules.fallbacks):
                if name not in aliases:
                    raise ValueError(f"routing.aliases.{alias}: {name!r} is not a model alias")
        return self

    @property
    def nats_store_dir(self) -> Path:
        return (self.nats.store_dir or self.data_dir / "nats").resolve()

    @property
    def clickhouse_dsn(self) -> str:
        if self.clickhouse.dsn:
            return self.clickhouse.dsn
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def clickhouse_embedded(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb://")

    @property
    def simulator_enabled(self) -> bool:
        if self.simulator.enabled != "auto":
            return self.simulator.enabled == "true"
        return any(m.base_url.startswith(self.simulator.url) for m in self.models)

    @property
    def providers(self) -> list[str]:
        return sorted({m.provider for m in self.models})

    def aliases(self) -> dict[str, ModelDeployment]:
        """Alias to deployment; the first entry of an alias wins until groups exist."""
        table: dict[str, ModelDeployment] = {}
        for model in self.models:
            table.setdefault(model.alias, model)
        return table

    def deployment(self, name: str) -> ModelDeployment | None:
        for model in self.models:
            if model.deployment == name:
                return model
        return None


def _slug(alias: str) -> str:
    out = "".join(c if c.isalnum() or c in "_-" else "-" for c in alias)
    return out.strip("-")[:128] or "deployment"
