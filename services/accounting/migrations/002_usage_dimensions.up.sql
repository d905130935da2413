-- 002: the dimensions and measures analysts slice by, and compression codecs.
--
-- New dimensions: user_id (the key's user), cache_hit (answered from the
-- response cache, no upstream call), batch_id ('' for interactive traffic),
-- final (false for an attempt that was followed by another one: count
-- requests with countIf(final), attempts with count()). tenant is the key's
-- team. New measure: output_tps, output tokens per second of generation
-- (after the first token), computed from the stored columns.
--
-- Codecs: timestamps are near-monotonic within a part (DoubleDelta), latencies
-- are floats that change slowly (Gorilla), token counts are small integers
-- (T64); everything then goes through ZSTD.
ALTER TABLE requests ADD COLUMN IF NOT EXISTS user_id LowCardinality(String) DEFAULT '' AFTER tenant;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS cache_hit Bool DEFAULT false AFTER finish_reason;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS batch_id String DEFAULT '' AFTER cache_hit;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS final Bool DEFAULT true AFTER batch_id;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS output_tps Float64 MATERIALIZED if(latency_ms - ifNull(ttft_ms, 0) > 0, completion_tokens / ((latency_ms - ifNull(ttft_ms, 0)) / 1000), 0) AFTER final;
ALTER TABLE requests MODIFY COLUMN timestamp DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1));
ALTER TABLE requests MODIFY COLUMN inserted_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(DoubleDelta, ZSTD(1));
ALTER TABLE requests MODIFY COLUMN latency_ms Float64 CODEC(Gorilla, ZSTD(1));
ALTER TABLE requests MODIFY COLUMN prompt_tokens UInt32 CODEC(T64, ZSTD(1));
ALTER TABLE requests MODIFY COLUMN completion_tokens UInt32 CODEC(T64, ZSTD(1));
ALTER TABLE requests MODIFY COLUMN cached_tokens UInt32 CODEC(T64, ZSTD(1));
ALTER TABLE requests MODIFY COLUMN request_id String CODEC(ZSTD(1));
