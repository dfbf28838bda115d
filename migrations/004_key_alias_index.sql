-- Key aliases are unique across the keys made through the admin API (checked under an advisory lock per
-- alias, since databases filled by LiteLLM may already hold duplicates): the check reads by alias.
CREATE INDEX keys_alias ON keys (key_alias) WHERE key_alias IS NOT NULL;
