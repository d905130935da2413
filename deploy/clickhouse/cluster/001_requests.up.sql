-- Cluster variant of migrations 001 and 002: the requests table, sharded and replicated.
--
-- igw.requests_local holds the rows on each node: the same columns, codecs,
-- sorting key and partitions as the embedded table after 001 + 002, on
-- ReplicatedReplacingMergeTree. The engine has no path arguments, so the
-- replica path and name come from the server settings default_replica_path
-- (/clickhouse/tables/{uuid}/{shard}) and default_replica_name ({replica}):
-- every node needs the macros {cluster}, {shard} and {replica}. The same
-- statement also works in a Replicated database.
--
-- igw.requests is the Distributed table the gateway writes to and reads from.
-- It shards by cityHash64(request_id), so every attempt of a request lands on
-- one shard: the ReplacingMergeTree dedup (rows with the same sorting key
-- collapse, readers use final=1) only ever needs rows of one shard, and the
-- shard-local materialized views (002) see each attempt on the shard that
-- stores it.
--
-- Dedup of a retried batch: the gateway sends insert_deduplication_token;
-- through a foreground (synchronous) Distributed insert each shard receives
-- the same part of the batch again, and its replicated table drops it (the
-- engine's default replicated_deduplication_window applies; unlike the
-- embedded table, no setting is needed). Set distributed_foreground_insert = 1
-- (insert_distributed_sync before 23.x) in the gateway user's profile, see
-- README.md.
--
-- Apply with: clickhouse-client --multiquery < 001_requests.up.sql
CREATE DATABASE IF NOT EXISTS igw ON CLUSTER '{cluster}';

CREATE TABLE IF NOT EXISTS igw.requests_local ON CLUSTER '{cluster}'
(
    timestamp         DateTime64(3, 'UTC') COMMENT 'when the attempt started (UsageEvent.ts)' CODEC(DoubleDelta, ZSTD(1)),
    request_id        String CODEC(ZSTD(1)),
    attempt           UInt16,
    key_id            LowCardinality(String),
    tenant            LowCardinality(String),
    user_id           LowCardinality(String) DEFAULT '',
    model             LowCardinality(String) COMMENT 'the gateway alias the client asked for',
    provider          LowCardinality(String),
    deployment        LowCardinality(String),
    upstream_model    LowCardinality(String),
    priority          LowCardinality(String),
    stream            Bool,
    prompt_tokens     UInt32 CODEC(T64, ZSTD(1)),
    completion_tokens UInt32 CODEC(T64, ZSTD(1)),
    cached_tokens     UInt32 CODEC(T64, ZSTD(1)),
    usage_estimated   Bool,
    cost_usd          Decimal(38, 12),
    latency_ms        Float64 CODEC(Gorilla, ZSTD(1)),
    ttft_ms           Nullable(Float64),
    status            LowCardinality(String),
    error_type        LowCardinality(Nullable(String)),
    http_status       UInt16,
    finish_reason     LowCardinality(Nullable(String)),
    cache_hit         Bool DEFAULT false,
    batch_id          String DEFAULT '',
    final             Bool DEFAULT true,
    output_tps        Float64 MATERIALIZED if(latency_ms - ifNull(ttft_ms, 0) > 0, completion_tokens / ((latency_ms - ifNull(ttft_ms, 0)) / 1000), 0),
    inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1)),
    INDEX idx_request_id request_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_key_id key_id TYPE set(1024) GRANULARITY 4
)
ENGINE = ReplicatedReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(timestamp)
PRIMARY KEY (tenant, model, toDate(timestamp))
ORDER BY (tenant, model, toDate(timestamp), request_id, attempt);

CREATE TABLE IF NOT EXISTS igw.requests ON CLUSTER '{cluster}' AS igw.requests_local
ENGINE = Distributed('{cluster}', igw, requests_local, cityHash64(request_id));
