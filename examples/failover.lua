-- Stage 5: a database that survives its primary. A primary and two
-- replicas watch each other: when the primary stops answering for
-- down_after, the replicas that still see a majority elect the one with the
-- most data (or the one policies/failover.lua names) and it takes the
-- writes; the other replica follows it, and the old primary, when it comes
-- back, rejoins as a replica. min_replicas + max_lag fence a primary cut
-- off from the others: it refuses writes instead of taking ones the new
-- primary would never see.
--
-- The web node's db client follows: a write that meets a read-only node, or
-- a primary that is gone, asks every db node who is primary now and is
-- retried there once.
--
--   strata run examples/failover.lua
--   curl -s -X PUT localhost:8080/api/users/1 -d '{"name":"alice"}'
--   redis-cli -p 7101 set user:1 alice
--   redis-cli -p 7101 wait 1 1000         -- on a majority: survives any one failure
--   kill -9 <pid of db1>                  -- the supervisor restarts it; meanwhile:
--   redis-cli -p 7102 info replication    -- role:master on db2a (the policy), epoch:2
--   strata status examples/failover.lua   -- HEALTH: primary/e2, replica/e2 ...
--   strata failover examples/failover.lua --to db1   -- a planned switch back
strata.supervisor { admin = "127.0.0.1:9140" }

local db = strata.db {
  primary  = { node = "db1", listen = "127.0.0.1:7101", dir = "../var/fo-db1" },
  replicas = {
    { node = "db2a", listen = "127.0.0.1:7102", dir = "../var/fo-db2a" },
    { node = "db3", listen = "127.0.0.1:7103", dir = "../var/fo-db3", priority = 200 },
  },
  failover     = { down_after = "1s", policy = "policies/failover.lua" },
  min_replicas = 1,       -- a primary cut off from both replicas refuses writes...
  max_lag      = "2s",    -- ...within this
  repl_timeout = "4s",
}
local cache = strata.cache {
  shards = { { node = "cache1", listen = "127.0.0.1:6001" } },
}
strata.web {
  nodes = { { node = "web1", listen = "127.0.0.1:8080" } },
  app   = "app.lua",
  cache = cache,
  db    = db,
}
