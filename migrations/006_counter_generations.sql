-- The generation of each Redis the counters live in (by key prefix): a random id set when a Redis that
-- restarted empty is seeded from the spend log, in the seed's transaction. A spend-log row whose cost
-- settled into an earlier generation, written after the seed (it was still in a replica's buffer), did not
-- reach the seeded counters: it is written uncounted and replayed (src/store/spend-log.ts).
CREATE TABLE counter_generations (
  prefix                text PRIMARY KEY,
  generation            text NOT NULL
);
