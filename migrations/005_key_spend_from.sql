-- When a key record's spend starts counting (LiteLLM keeps spend on the key row, so a key deleted and
-- generated again with the same value starts at zero). The key id is derived from the key's hash, so the
-- old record's spend-log rows carry the same key_id: they stay (an audit record), and budgets and
-- /key/info count only rows from spend_from on. NULL for keys made before this column: all their rows count,
-- and their budget counters keep their names (src/store/counters.ts, budgetPeriodOf).
ALTER TABLE keys ADD COLUMN spend_from timestamptz;
