-- Stage 3: a load balancer in front of two web nodes. Clients reach only the
-- balancer; losing one web node is not visible to them: health checks take
-- it out of rotation, and idempotent requests are retried on the other.
--
--   strata run examples/balancer.lua
--   curl -s localhost:8080/hello
--   curl -s -X PUT localhost:8080/api/users/1 -d '{"name":"alice"}'
--   curl -s localhost:8080/api/users/1          # either web node answers the same
--   strata status examples/balancer.lua
strata.supervisor { admin = "127.0.0.1:9100" }

local db = strata.db {
  primary = { node = "data", listen = "127.0.0.1:7001", dir = "../var/data", fsync = "everysec" },
}
local cache = strata.cache {
  shards          = { { node = "data", listen = "127.0.0.1:6001" } },
  max_memory      = "256mb",
  invalidate_from = db,
}
local web = strata.web {
  nodes = { { node = "web1", listen = "127.0.0.1:8081" },
            { node = "web2", listen = "127.0.0.1:8082" } },
  app   = "app.lua",
  cache = cache,
  db    = db,
}
strata.balancer {
  node     = "lb",
  listen   = "127.0.0.1:8080",
  backends = web,
  policy   = "least_conn",            -- or "policies/least_busy.lua": routing in Lua
  health   = { path = "/healthz", interval = "1s", rise = 2, fall = 3 },
}
