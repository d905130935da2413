-- Rollback of 002: drops the added columns (their values are lost) and goes
-- back to the default codecs.
ALTER TABLE requests DROP COLUMN IF EXISTS output_tps;
ALTER TABLE requests DROP COLUMN IF EXISTS final;
ALTER TABLE requests DROP COLUMN IF EXISTS batch_id;
ALTER TABLE requests DROP COLUMN IF EXISTS cache_hit;
ALTER TABLE requests DROP COLUMN IF EXISTS user_id;
ALTER TABLE requests MODIFY COLUMN timestamp DateTime64(3, 'UTC') CODEC(Default);
ALTER TABLE requests MODIFY COLUMN inserted_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Default);
ALTER TABLE requests MODIFY COLUMN latency_ms Float64 CODEC(Default);
ALTER TABLE requests MODIFY COLUMN prompt_tokens UInt32 CODEC(Default);
ALTER TABLE requests MODIFY COLUMN completion_tokens UInt32 CODEC(Default);
ALTER TABLE requests MODIFY COLUMN cached_tokens UInt32 CODEC(Default);
ALTER TABLE requests MODIFY COLUMN request_id String CODEC(Default);
