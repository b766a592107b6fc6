-- Stage 2: the web tier and the data tier on separate nodes. The web node
-- holds no state, so it can be replaced or multiplied at will; the data node
-- gets the disk and the memory. The cache follows the database's change
-- stream: a write to user:1 in the database deletes user:1 from the cache,
-- whoever made it.
--
--   strata run examples/web_and_data.lua
--   curl -s -X PUT localhost:8080/api/users/1 -d '{"name":"alice"}'
--   curl -s localhost:8080/api/users/1                    # cached now
--   redis-cli -p 7001 set user:1 '{"id":1,"name":"bob"}'   # changed behind the app's back...
--   curl -s localhost:8080/api/users/1                    # ...and the cache let go of alice
strata.supervisor { admin = "127.0.0.1:9100" }

local db = strata.db {
  primary = { node = "data", listen = "127.0.0.1:7001", dir = "../var/data", fsync = "everysec" },
}
local cache = strata.cache {
  shards          = { { node = "data", listen = "127.0.0.1:6001" } },
  max_memory      = "256mb",
  eviction        = "lfu",
  invalidate_from = db,
}
strata.web {
  nodes  = { { node = "web1", listen = "127.0.0.1:8080" } },
  app    = "app.lua",
  static = "public",
  cache  = cache,
  db     = db,
}
