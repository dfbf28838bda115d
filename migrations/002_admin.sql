-- The admin API: the display name of a generated key (LiteLLM's key_name, "sk-...abcd": never the key).
-- No new spend_logs index: every request pays for each one (see 001); per-team sums scan by time (BRIN).
ALTER TABLE keys ADD COLUMN key_name text;
