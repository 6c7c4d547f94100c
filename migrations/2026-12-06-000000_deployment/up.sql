-- The deployment this database belongs to: a random id, and the Redis key
-- namespace its gate keeps counters in. One row at most. The first server
-- to start records its namespace; a server started with another is refused,
-- so two namespaces never share one database's seats. `slotgate
-- move-namespace` is the one way to change it.
CREATE TABLE deployment (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    deployment_id UUID NOT NULL DEFAULT gen_random_uuid(),
    redis_namespace TEXT NOT NULL CHECK (redis_namespace <> ''),
    bound_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    moved_from TEXT,
    moved_at TIMESTAMPTZ
);
