-- Stage 3: a database with read replicas. The primary takes every write and
-- streams its log to two replicas; each keeps its own copy on its own disk
-- and serves reads, so read traffic spreads over three machines and a lost
-- primary disk is not lost data. db3 follows db2 (a chain), so the primary
-- sends its stream once however many replicas hang below db2.
--
--   strata run examples/replicated_db.lua
--   redis-cli -p 7001 set user:1 alice
--   redis-cli -p 7002 get user:1            -- "alice", read from a replica
--   redis-cli -p 7001 wait 2 1000           -- how many replicas have it
--   redis-cli -p 7001 info replication
--   strata status examples/replicated_db.lua   -- the LAG column
strata.supervisor { admin = "127.0.0.1:9100" }

strata.db {
  primary  = { node = "db1", listen = "127.0.0.1:7001", dir = "../var/db1", fsync = "everysec" },
  replicas = {
    { node = "db2", listen = "127.0.0.1:7002", dir = "../var/db2" },
    { node = "db3", listen = "127.0.0.1:7003", dir = "../var/db3", replica_of = "db2" },
  },
  backlog      = "16mb",  -- how far behind a replica may fall and still catch up from memory
  repl_timeout = "10s",   -- a silent link is dropped after this
  reads        = "replicas",
}
