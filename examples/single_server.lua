-- Stage 1: a single server. One node runs everything: the web application
-- (examples/app.lua), a cache for hot data and a durable database. This is
-- where every system starts; the next stages split it up.
--
--   strata run examples/single_server.lua
--   curl -s -X PUT localhost:8080/api/users/1 -d '{"name":"alice"}'
--   curl -s localhost:8080/api/users/1
--   redis-cli -p 7001 get user:1            # the database: logged, survives restarts
--   redis-cli -p 6001 info stats            # the cache: hits and misses
strata.supervisor { admin = "127.0.0.1:9100" }

local db = strata.db {
  primary = { node = "server", listen = "127.0.0.1:7001", dir = "../var/server", fsync = "everysec" },
}
local cache = strata.cache {
  shards     = { { node = "server", listen = "127.0.0.1:6001" } },
  max_memory = "64mb",
  eviction   = "lru",
}
strata.web {
  nodes  = { { node = "server", listen = "127.0.0.1:8080" } },
  app    = "app.lua",
  static = "public",
  cache  = cache,
  db     = db,
}
