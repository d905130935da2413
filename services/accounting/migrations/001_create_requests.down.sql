-- Rollback of 001: drops the requests table and every row in it.
DROP TABLE IF EXISTS requests;
