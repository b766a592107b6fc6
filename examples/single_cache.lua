-- Stage: one server. A single cache node in front of nothing yet: the
-- smallest topology, handy for trying redis-cli against Strata.
--
--   strata run examples/single_cache.lua
--   redis-cli -p 6001 ping
strata.cache {
  shards     = { { node = "cache", listen = "127.0.0.1:6001" } },
  max_memory = "32mb",
  eviction   = "lru",
}
