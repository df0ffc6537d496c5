-- The floor route's tables: applied by the benchmark before `wrangler dev` starts.
CREATE TABLE IF NOT EXISTS sources (id TEXT PRIMARY KEY, ingest_key TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, source_id TEXT NOT NULL, payload TEXT NOT NULL, received_at INTEGER NOT NULL);
INSERT OR IGNORE INTO sources (id, ingest_key) VALUES ('00000000-0000-7000-8000-000000000001', 'floor');
