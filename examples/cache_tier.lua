-- Stage 6: a cache tier. Two shards split the keyspace: the web tier places
-- each key on a shard by consistent hashing, so adding a shard moves only
-- its share of the keys, and a shard that dies costs misses, not errors.
-- Each shard keeps its memory under max_memory by evicting the least
-- recently used keys.
--
--   strata run examples/cache_tier.lua
--   for i in 1 2 3 4; do curl -s -X PUT localhost:8080/api/users/$i -d '{"name":"u'$i'"}'; done
--   for i in 1 2 3 4; do curl -s localhost:8080/api/users/$i; done
--   redis-cli -p 6001 dbsize; redis-cli -p 6002 dbsize   # the users spread over both shards
--   strata status examples/cache_tier.lua
strata.supervisor { admin = "127.0.0.1:9100" }   -- nodes get 9101, 9102, ...

local db = strata.db {
  primary = { node = "db1", listen = "127.0.0.1:7001", dir = "../var/db1", fsync = "everysec" },
}
local cache = strata.cache {
  shards     = { { node = "cache1", listen = "127.0.0.1:6001" },
                 { node = "cache2", listen = "127.0.0.1:6002" } },
  max_memory = "64mb",
  eviction   = "lru",           -- or a Lua policy: "policies/size_aware_evict.lua"
  invalidate_from = db,
}
strata.web {
  nodes = { { node = "web1", listen = "127.0.0.1:8080" } },
  app   = "app.lua",
  cache = cache,
  db    = db,
}
