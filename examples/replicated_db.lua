-- Stage 4: a database with read replicas. The primary takes every write and
-- streams its log to two replicas; each keeps its own copy on its own disk
-- and serves reads, so read traffic spreads over three machines and a lost
-- primary disk is not lost data. db3 follows db2 (a chain), so the primary
-- sends its stream once however many replicas hang below db2.
--
-- The web tier sends reads to the replicas; with read_your_writes a user
-- who just wrote reads their write back even from a replica that lags (the
-- read waits briefly for one that has it, else the primary answers).
--
--   strata run examples/replicated_db.lua
--   curl -s -X POST localhost:8080/api/users/1/visits   # a write, to the primary
--   curl -s localhost:8080/api/users/1/profile          # a read, from a replica
--   redis-cli -p 7002 get visits:1                      # the replica has it
--   redis-cli -p 7001 wait 2 1000                       # how many replicas have it
--   strata status examples/replicated_db.lua            # the LAG column
strata.supervisor { admin = "127.0.0.1:9100" }

local db = strata.db {
  primary  = { node = "db1", listen = "127.0.0.1:7001", dir = "../var/db1", fsync = "everysec" },
  replicas = {
    { node = "db2", listen = "127.0.0.1:7002", dir = "../var/db2" },
    { node = "db3", listen = "127.0.0.1:7003", dir = "../var/db3", replica_of = "db2" },
  },
  backlog          = "16mb",  -- how far behind a replica may fall and still catch up from memory
  repl_timeout     = "10s",   -- a silent link is dropped after this
  reads            = "replicas",
  read_your_writes = true,
}
local cache = strata.cache {
  shards          = { { node = "cache1", listen = "127.0.0.1:6001" } },
  max_memory      = "256mb",
  invalidate_from = db,
}
strata.web {
  nodes = { { node = "web1", listen = "127.0.0.1:8080" } },
  app   = "app.lua",
  cache = cache,
  db    = db,
}
