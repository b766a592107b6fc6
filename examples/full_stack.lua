-- The whole architecture: a balancer in front of two web nodes running
-- examples/app.lua, a cache tier of two shards that follows the database's
-- change stream, and a database primary with a read replica. Every tier
-- scales on its own; `strata status` shows them all.
--
--   strata run examples/full_stack.lua        # tools/run-example runs this
--   curl -s -X PUT localhost:8080/api/users/1 -d '{"name":"alice","city":"Oslo"}'
--   curl -s localhost:8080/api/users/1        # db on the first read, cache after
--   curl -s -X POST localhost:8080/api/users/1/visits
--   curl -s localhost:8080/api/users/1/profile
--   curl -si localhost:8080/ | head -12       # the static page with its CDN headers
--   strata status examples/full_stack.lua
strata.supervisor { admin = "127.0.0.1:9100" }

local db = strata.db {
  primary  = { node = "db1", listen = "127.0.0.1:7001", dir = "../var/db1", fsync = "everysec" },
  replicas = { { node = "db2", listen = "127.0.0.1:7002", dir = "../var/db2" } },
  reads            = "replicas",
  read_your_writes = true,
}
local cache = strata.cache {
  shards     = { { node = "cache1", listen = "127.0.0.1:6001" },
                 { node = "cache2", listen = "127.0.0.1:6002" } },
  max_memory = "128mb",
  eviction   = "lru",
  invalidate_from = db,
}
local web = strata.web {
  nodes  = { { node = "web1", listen = "127.0.0.1:8081" },
             { node = "web2", listen = "127.0.0.1:8082" } },
  app    = "app.lua",
  static = "public",
  cache  = cache,
  db     = db,
}
strata.balancer {
  node     = "lb",
  listen   = "127.0.0.1:8080",
  backends = web,
  policy   = "least_conn",
  health   = { path = "/healthz", interval = "1s", rise = 2, fall = 3 },
}
