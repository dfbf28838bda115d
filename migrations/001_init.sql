-- tollgate's records. Applied once, in order, under an advisory lock (src/store/migrate.ts); the same SQL
-- runs on PostgreSQL and on embedded PGlite. Keys are stored by their sha256 only.

CREATE TABLE keys (
  key_hash              text PRIMARY KEY,          -- sha256 hex of the sk- key
  key_id                text NOT NULL UNIQUE,      -- its first 16 hex characters
  key_alias             text,
  models                jsonb NOT NULL DEFAULT '[]',
  user_id               text,
  team_id               text,
  max_budget            double precision,
  budget_duration       text,
  rpm_limit             integer,
  tpm_limit             integer,
  max_parallel_requests integer,
  blocked               boolean NOT NULL DEFAULT false,
  expires_at            timestamptz,
  metadata              jsonb NOT NULL DEFAULT '{}',
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX keys_team ON keys (team_id);
CREATE INDEX keys_user ON keys (user_id);

CREATE TABLE teams (
  team_id               text PRIMARY KEY,
  team_alias            text,
  models                jsonb NOT NULL DEFAULT '[]',
  max_budget            double precision,
  budget_duration       text,
  rpm_limit             integer,
  tpm_limit             integer,
  max_parallel_requests integer,
  blocked               boolean NOT NULL DEFAULT false,
  metadata              jsonb NOT NULL DEFAULT '{}',
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
  user_id               text PRIMARY KEY,
  max_budget            double precision,
  budget_duration       text,
  rpm_limit             integer,
  tpm_limit             integer,
  max_parallel_requests integer,
  metadata              jsonb NOT NULL DEFAULT '{}',
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now()
);

-- Models added through the admin API (config models live in the file).
CREATE TABLE models (
  model_id              text PRIMARY KEY,
  model_name            text NOT NULL,
  litellm_params        jsonb NOT NULL,
  model_info            jsonb NOT NULL DEFAULT '{}',
  created_at            timestamptz NOT NULL DEFAULT now()
);

-- One row per request. `counted`: its cost reached the shared counters; false while Redis was unreachable,
-- until the replay adds it (src/store/accounting.ts).
-- Written on every request, so it carries few indexes (each costs every insert): BRIN for time (rows arrive
-- in time order, and BRIN costs next to nothing on insert), a b-tree for per-key sums, a partial index for
-- the rows not yet counted (normally none). Per-user and per-team sums scan a period through the BRIN.
-- Duplicates are kept out per batch (spend_batches), not by a unique index per row.
CREATE TABLE spend_logs (
  lease_id              text NOT NULL,               -- the request's lease (or a fresh id): the replay's handle
  request_id            text NOT NULL,
  key_id                text,
  user_id               text,
  team_id               text,
  model                 text NOT NULL,
  deployment            text,
  prompt_tokens         integer NOT NULL,
  completion_tokens     integer NOT NULL,
  cost                  double precision NOT NULL,
  status                integer NOT NULL,
  latency_ms            double precision NOT NULL,
  estimated             boolean NOT NULL DEFAULT false,
  counted               boolean NOT NULL DEFAULT true,
  created_at            timestamptz NOT NULL
);
CREATE INDEX spend_logs_key ON spend_logs (key_id, created_at);
CREATE INDEX spend_logs_created ON spend_logs USING brin (created_at);
CREATE INDEX spend_logs_uncounted ON spend_logs (created_at) WHERE NOT counted;

-- Batches of the spend log already written (a retried batch is skipped whole).
CREATE TABLE spend_batches (
  batch_id              text PRIMARY KEY,
  written_at            timestamptz NOT NULL DEFAULT now()
);
