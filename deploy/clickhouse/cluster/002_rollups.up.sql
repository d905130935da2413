-- Cluster variant of migration 003: rollups by minute, hour and day.
--
-- Per grain: igw.usage_<grain>_local (ReplicatedAggregatingMergeTree, the
-- same columns, partitions and sorting key as the embedded usage_<grain>), a
-- materialized view igw.usage_<grain>_mv on each node reading the inserts into
-- that node's igw.requests_local, and a Distributed igw.usage_<grain> over the
-- local tables for reading. Read it as the embedded rollups: sum() for the
-- counters, quantilesMerge(0.5, 0.95, 0.99)(latency_ms) for the latencies; the
-- Distributed table merges the partial states of every shard. Nothing inserts
-- into the Distributed rollups (they have no sharding key): rows only come
-- from the views.
--
-- Because requests are sharded by request_id, all attempts of a request are
-- counted by the views of one shard, and a retried batch is dropped by the
-- views as well (deduplicate_blocks_in_dependent_materialized_views, sent by
-- the gateway with every insert).
--
-- TTL: the per-minute rollup keeps 35 days, like the gateway's default
-- clickhouse.minute_rollup_ttl_days. With clickhouse.manage_schema = false the
-- gateway does not apply TTLs; change them here (see README.md).
--
-- Apply after 001: clickhouse-client --multiquery < 002_rollups.up.sql

CREATE TABLE IF NOT EXISTS igw.usage_minute_local ON CLUSTER '{cluster}'
(
    bucket            DateTime('UTC'),
    tenant            LowCardinality(String),
    key_id            LowCardinality(String),
    user_id           LowCardinality(String),
    model             LowCardinality(String),
    provider          LowCardinality(String),
    deployment        LowCardinality(String),
    requests          SimpleAggregateFunction(sum, UInt64),
    attempts          SimpleAggregateFunction(sum, UInt64),
    errors            SimpleAggregateFunction(sum, UInt64),
    cache_hits        SimpleAggregateFunction(sum, UInt64),
    prompt_tokens     SimpleAggregateFunction(sum, UInt64),
    completion_tokens SimpleAggregateFunction(sum, UInt64),
    cached_tokens     SimpleAggregateFunction(sum, UInt64),
    cost_usd          SimpleAggregateFunction(sum, Decimal(38, 12)),
    latency_ms        AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    ttft_ms           AggregateFunction(quantiles(0.5, 0.95, 0.99), Nullable(Float64))
)
ENGINE = ReplicatedAggregatingMergeTree
PARTITION BY toYYYYMMDD(bucket)
ORDER BY (bucket, tenant, key_id, model, provider, deployment, user_id)
TTL toDateTime(bucket) + INTERVAL 35 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS igw.usage_minute_mv ON CLUSTER '{cluster}'
TO igw.usage_minute_local AS
SELECT
    toStartOfMinute(timestamp) AS bucket,
    tenant, key_id, user_id, model, provider, deployment,
    toUInt64(countIf(final)) AS requests,
    toUInt64(count()) AS attempts,
    toUInt64(countIf(final AND status = 'error')) AS errors,
    toUInt64(countIf(cache_hit)) AS cache_hits,
    toUInt64(sum(prompt_tokens)) AS prompt_tokens,
    toUInt64(sum(completion_tokens)) AS completion_tokens,
    toUInt64(sum(cached_tokens)) AS cached_tokens,
    sum(cost_usd) AS cost_usd,
    quantilesState(0.5, 0.95, 0.99)(latency_ms) AS latency_ms,
    quantilesState(0.5, 0.95, 0.99)(ttft_ms) AS ttft_ms
FROM igw.requests_local
GROUP BY bucket, tenant, key_id, user_id, model, provider, deployment;

CREATE TABLE IF NOT EXISTS igw.usage_minute ON CLUSTER '{cluster}' AS igw.usage_minute_local
ENGINE = Distributed('{cluster}', igw, usage_minute_local);

CREATE TABLE IF NOT EXISTS igw.usage_hour_local ON CLUSTER '{cluster}'
(
    bucket            DateTime('UTC'),
    tenant            LowCardinality(String),
    key_id            LowCardinality(String),
    user_id           LowCardinality(String),
    model             LowCardinality(String),
    provider          LowCardinality(String),
    deployment        LowCardinality(String),
    requests          SimpleAggregateFunction(sum, UInt64),
    attempts          SimpleAggregateFunction(sum, UInt64),
    errors            SimpleAggregateFunction(sum, UInt64),
    cache_hits        SimpleAggregateFunction(sum, UInt64),
    prompt_tokens     SimpleAggregateFunction(sum, UInt64),
    completion_tokens SimpleAggregateFunction(sum, UInt64),
    cached_tokens     SimpleAggregateFunction(sum, UInt64),
    cost_usd          SimpleAggregateFunction(sum, Decimal(38, 12)),
    latency_ms        AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    ttft_ms           AggregateFunction(quantiles(0.5, 0.95, 0.99), Nullable(Float64))
)
ENGINE = ReplicatedAggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, tenant, key_id, model, provider, deployment, user_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS igw.usage_hour_mv ON CLUSTER '{cluster}'
TO igw.usage_hour_local AS
SELECT
    toStartOfHour(timestamp) AS bucket,
    tenant, key_id, user_id, model, provider, deployment,
    toUInt64(countIf(final)) AS requests,
    toUInt64(count()) AS attempts,
    toUInt64(countIf(final AND status = 'error')) AS errors,
    toUInt64(countIf(cache_hit)) AS cache_hits,
    toUInt64(sum(prompt_tokens)) AS prompt_tokens,
    toUInt64(sum(completion_tokens)) AS completion_tokens,
    toUInt64(sum(cached_tokens)) AS cached_tokens,
    sum(cost_usd) AS cost_usd,
    quantilesState(0.5, 0.95, 0.99)(latency_ms) AS latency_ms,
    quantilesState(0.5, 0.95, 0.99)(ttft_ms) AS ttft_ms
FROM igw.requests_local
GROUP BY bucket, tenant, key_id, user_id, model, provider, deployment;

CREATE TABLE IF NOT EXISTS igw.usage_hour ON CLUSTER '{cluster}' AS igw.usage_hour_local
ENGINE = Distributed('{cluster}', igw, usage_hour_local);

CREATE TABLE IF NOT EXISTS igw.usage_day_local ON CLUSTER '{cluster}'
(
    bucket            DateTime('UTC'),
    tenant            LowCardinality(String),
    key_id            LowCardinality(String),
    user_id           LowCardinality(String),
    model             LowCardinality(String),
    provider          LowCardinality(String),
    deployment        LowCardinality(String),
    requests          SimpleAggregateFunction(sum, UInt64),
    attempts          SimpleAggregateFunction(sum, UInt64),
    errors            SimpleAggregateFunction(sum, UInt64),
    cache_hits        SimpleAggregateFunction(sum, UInt64),
    prompt_tokens     SimpleAggregateFunction(sum, UInt64),
    completion_tokens SimpleAggregateFunction(sum, UInt64),
    cached_tokens     SimpleAggregateFunction(sum, UInt64),
    cost_usd          SimpleAggregateFunction(sum, Decimal(38, 12)),
    latency_ms        AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    ttft_ms           AggregateFunction(quantiles(0.5, 0.95, 0.99), Nullable(Float64))
)
ENGINE = ReplicatedAggregatingMergeTree
PARTITION BY toYear(bucket)
ORDER BY (bucket, tenant, key_id, model, provider, deployment, user_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS igw.usage_day_mv ON CLUSTER '{cluster}'
TO igw.usage_day_local AS
SELECT
    toStartOfDay(timestamp) AS bucket,
    tenant, key_id, user_id, model, provider, deployment,
    toUInt64(countIf(final)) AS requests,
    toUInt64(count()) AS attempts,
    toUInt64(countIf(final AND status = 'error')) AS errors,
    toUInt64(countIf(cache_hit)) AS cache_hits,
    toUInt64(sum(prompt_tokens)) AS prompt_tokens,
    toUInt64(sum(completion_tokens)) AS completion_tokens,
    toUInt64(sum(cached_tokens)) AS cached_tokens,
    sum(cost_usd) AS cost_usd,
    quantilesState(0.5, 0.95, 0.99)(latency_ms) AS latency_ms,
    quantilesState(0.5, 0.95, 0.99)(ttft_ms) AS ttft_ms
FROM igw.requests_local
GROUP BY bucket, tenant, key_id, user_id, model, provider, deployment;

CREATE TABLE IF NOT EXISTS igw.usage_day ON CLUSTER '{cluster}' AS igw.usage_day_local
ENGINE = Distributed('{cluster}', igw, usage_day_local);
