-- The key ids a key had before /key/regenerate gave it a new secret (oldest first). A request admitted
-- under an old id may end after the regenerate, on any replica: its spend is charged to the key's current
-- record (src/store/records.ts RecordCache.current), and its spend-log row carries the current id.
ALTER TABLE keys ADD COLUMN previous_key_ids jsonb NOT NULL DEFAULT '[]'::jsonb;
