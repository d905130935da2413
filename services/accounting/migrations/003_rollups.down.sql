-- Rollback of 003: drops the rollups and their views (the requests table keeps every row).
DROP VIEW IF EXISTS usage_minute_mv;
DROP VIEW IF EXISTS usage_hour_mv;
DROP VIEW IF EXISTS usage_day_mv;
DROP TABLE IF EXISTS usage_minute;
DROP TABLE IF EXISTS usage_hour;
DROP TABLE IF EXISTS usage_day;
