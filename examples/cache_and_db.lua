-- Stage 2: cache and database on separate nodes. Each tier now scales on its
-- own machine: the database gets the disk and the memory for its data set,
-- the cache gets memory for the hot set, and neither slows the other down.
--
--   strata run examples/cache_and_db.lua
--   redis-cli -p 7001 set user:1 alice
--   redis-cli -p 6001 set session:abc user:1 ex 3600
strata.supervisor { admin = "127.0.0.1:9100" }

strata.db {
  primary = { node = "db1", listen = "127.0.0.1:7001", dir = "../var/db1", fsync = "everysec" },
}
strata.cache {
  shards     = { { node = "cache1", listen = "127.0.0.1:6001" } },
  max_memory = "256mb",
  eviction   = "lfu",
}
