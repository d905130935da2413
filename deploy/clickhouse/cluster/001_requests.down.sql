-- Drops what 001_requests.up.sql created (the data too). Apply 002's down first.
DROP TABLE IF EXISTS igw.requests ON CLUSTER '{cluster}' SYNC;
DROP TABLE IF EXISTS igw.requests_local ON CLUSTER '{cluster}' SYNC;
