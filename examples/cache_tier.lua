-- Stage: a cache tier. Web servers keep hot data in memory so that they
-- hit the database less. Two shards split the keyspace (clients hash keys
-- across them); each keeps its memory under max_memory by evicting the least
-- recently used keys.
--
--   strata run examples/cache_tier.lua
--   redis-cli -p 6001 set greeting hello
--   redis-cli -p 6001 get greeting
--   strata status examples/cache_tier.lua
strata.supervisor { admin = "127.0.0.1:9100" }   -- nodes get 9101, 9102

strata.cache {
  shards     = { { node = "cache1", listen = "127.0.0.1:6001" },
                 { node = "cache2", listen = "127.0.0.1:6002" } },
  max_memory = "64mb",
  eviction   = "lru",
}
