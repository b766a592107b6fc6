-- Stage 2: cache and database on separate nodes. Each tier now scales on its
-- own machine: the database gets the disk and the memory for its data set,
-- the cache gets memory for the hot set, and neither slows the other down.
--
-- The cache follows the database's change stream: a write to user:1 in the
-- database deletes user:1 from the cache, so a cache-aside reader never keeps
-- serving a value the database has replaced.
--
--   strata run examples/cache_and_db.lua
--   redis-cli -p 6001 set user:1 alice      # cached copy
--   redis-cli -p 7001 set user:1 bob        # the database changes...
--   redis-cli -p 6001 get user:1            # ...and the cached copy is gone
strata.supervisor { admin = "127.0.0.1:9100" }

local db = strata.db {
  primary = { node = "db1", listen = "127.0.0.1:7001", dir = "../var/db1", fsync = "everysec" },
}
strata.cache {
  shards     = { { node = "cache1", listen = "127.0.0.1:6001" } },
  max_memory = "256mb",
  eviction   = "lfu",
  invalidate_from = db,
}
