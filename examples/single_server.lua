-- Stage 1: a single server. One node hosts everything the application needs
-- besides itself: a cache for hot data and a durable database. This is where
-- every system starts; the next stages split it up.
--
--   strata run examples/single_server.lua
--   redis-cli -p 7001 set user:1 alice     # the database: logged, survives restarts
--   redis-cli -p 6001 set page:/ "<html>"  # the cache: fast, bounded, evicts
strata.supervisor { admin = "127.0.0.1:9100" }

strata.db {
  primary = { node = "server", listen = "127.0.0.1:7001", dir = "../var/server", fsync = "everysec" },
}
strata.cache {
  shards     = { { node = "server", listen = "127.0.0.1:6001" } },
  max_memory = "64mb",
  eviction   = "lru",
}
