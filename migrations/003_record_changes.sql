-- Every record write also leaves a row here, in the same transaction. Replicas on PostgreSQL poll it about
-- twice a second, so a change reaches every replica within a second even when its broadcast was lost (Redis
-- down or a subscriber silently cut off): the broadcast makes revocation fast, this makes it certain.
-- Rows older than an hour are deleted by the writers.
CREATE TABLE record_changes (
  seq                   bigserial PRIMARY KEY,
  kind                  text NOT NULL,
  id                    text NOT NULL,
  at                    timestamptz NOT NULL DEFAULT now()
);
