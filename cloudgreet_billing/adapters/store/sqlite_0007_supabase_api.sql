-- Version 7 for SQLite, the equivalent of migrations/0007_supabase_api.sql. That version
-- defines the Postgres functions the Supabase REST store calls; an embedded SQLite store
-- is never reached through REST, so it has nothing to add. The version is still recorded,
-- so that every version exists on both backends.
SELECT 1;
