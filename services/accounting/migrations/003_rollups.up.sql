-- 003: rollups by minute, hour and day, kept up to date by materialized views.
--
-- Each usage_<grain> table holds one row per (bucket, team, key, user, model,
-- provider, deployment) with sums and latency quantile states, so dashboards
-- over months read thousands of rows instead of millions. Read them with
-- sum() for the counters and quantilesMerge(0.5, 0.95, 0.99)(latency_ms) for
-- the latencies, grouped by the dimensions wanted. requests counts requests
-- (an attempt that was followed by another does not count), attempts counts
-- every attempt, errors counts requests that ended in an error.
--
-- Exactly once: the views see each inserted block once. The accounting writer
-- never inserts an attempt the requests table already holds, and a retried
-- batch is deduplicated by its insert token in the views as well
-- (deduplicate_blocks_in_dependent_materialized_views), so the rollups agree
-- with the requests table queried with FINAL.
CREATE TABLE IF NOT EXISTS usage_minute
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
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(bucket)
ORDER BY (bucket, tenant, key_id, model, provider, deployment, user_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_minute_mv TO usage_minute AS
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
FROM requests
GROUP BY bucket, tenant, key_id, user_id, model, provider, deployment;

CREATE TABLE IF NOT EXISTS usage_hour
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
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, tenant, key_id, model, provider, deployment, user_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hour_mv TO usage_hour AS
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
FROM requests
GROUP BY bucket, tenant, key_id, user_id, model, provider, deployment;

CREATE TABLE IF NOT EXISTS usage_day
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
ENGINE = AggregatingMergeTree
PARTITION BY toYear(bucket)
ORDER BY (bucket, tenant, key_id, model, provider, deployment, user_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_day_mv TO usage_day AS
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
FROM requests
GROUP BY bucket, tenant, key_id, user_id, model, provider, deployment;
