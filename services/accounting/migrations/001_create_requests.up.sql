-- 001: the requests table, one row per attempt of a request (a UsageEvent).
--
-- Dedup. Usage events are delivered at least once, so the same attempt can be
-- inserted more than once (a crash between insert and ack, a re-published
-- event). Two layers keep it counted once:
--   * non_replicated_deduplication_window: a retried batch insert with the same
--     insert_deduplication_token (derived from the batch's message ids) is
--     dropped by the engine. Without this setting the token is ignored on a
--     non-replicated MergeTree.
--   * ReplacingMergeTree(inserted_at): rows with the same sorting key collapse
--     to the latest insert at merge time; readers query with final=1 so
--     duplicates that are not merged yet never show. The sorting key ends with
--     (request_id, attempt), and the columns before them are copied from the
--     same event, so two copies of one attempt always share a key (and a
--     partition: collapsing never crosses partitions).
--
-- ORDER BY. Analysts filter by tenant, then model, then time; the primary key
-- (the sparse index kept in memory) is that prefix, the sorting key adds
-- (request_id, attempt) for the dedup above. Partitions are months, so old
-- months can be dropped or moved whole. tenant and key_id are '' when unknown:
-- sorting-key columns cannot be Nullable.
CREATE TABLE IF NOT EXISTS requests
(
    timestamp         DateTime64(3, 'UTC') COMMENT 'when the attempt started (UsageEvent.ts)',
    request_id        String,
    attempt           UInt16,
    key_id            LowCardinality(String),
    tenant            LowCardinality(String),
    model             LowCardinality(String) COMMENT 'the gateway alias the client asked for',
    provider          LowCardinality(String),
    deployment        LowCardinality(String),
    upstream_model    LowCardinality(String),
    priority          LowCardinality(String),
    stream            Bool,
    prompt_tokens     UInt32,
    completion_tokens UInt32,
    cached_tokens     UInt32,
    usage_estimated   Bool,
    cost_usd          Decimal(38, 12),
    latency_ms        Float64,
    ttft_ms           Nullable(Float64),
    status            LowCardinality(String),
    error_type        LowCardinality(Nullable(String)),
    http_status       UInt16,
    finish_reason     LowCardinality(Nullable(String)),
    inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_request_id request_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_key_id key_id TYPE set(1024) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(timestamp)
PRIMARY KEY (tenant, model, toDate(timestamp))
ORDER BY (tenant, model, toDate(timestamp), request_id, attempt)
SETTINGS non_replicated_deduplication_window = 1000;
