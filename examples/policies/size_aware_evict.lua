-- size_aware_evict.lua: an eviction policy for a cache node.
--
-- Evicts large, cold values first: a big value that nobody has read for a
-- while frees the most memory for the least harm. Each candidate gets a
-- score of size x idle time, damped by how often it has been read, and the
-- highest score goes.
--
-- Use it from a topology:
--   strata.cache { shards = {...}, max_memory = "64mb",
--                  eviction = "policies/size_aware_evict.lua" }
-- or at run time:  redis-cli CONFIG SET maxmemory-policy /path/to/size_aware_evict.lua
--
-- The cache samples a few keys and calls choose(candidates); each candidate
-- is { key, size (bytes), last_access and inserted (ms since the epoch),
-- hits (0..255, a logarithmic access counter), ttl (ms left, or -1) }.
local M = { api = 1 }

function M.choose(candidates)
  -- Idle time is measured from the newest access among the candidates: the
  -- sandbox's clock (os.time) counts whole seconds, and against it every key
  -- touched in the current second would look equally fresh.
  local now = 0
  for _, c in ipairs(candidates) do
    if c.last_access > now then now = c.last_access end
  end
  local best, best_score
  for i, c in ipairs(candidates) do
    local idle = now - c.last_access + 1
    -- A key about to expire anyway is the cheapest to lose.
    local expiring = (c.ttl >= 0 and c.ttl < 1000) and 4 or 1
    local score = c.size * idle * expiring / (1 + c.hits)
    if not best or score > best_score then
      best, best_score = i, score
    end
  end
  return best
end

-- Called once when the policy loads: a cheap self-check.
function M.validate()
  local pick = M.choose {
    { key = "small", size = 64, last_access = 0, inserted = 0, hits = 0, ttl = -1 },
    { key = "large", size = 4096, last_access = 0, inserted = 0, hits = 0, ttl = -1 },
  }
  assert(pick == 2, "size_aware_evict should prefer the larger value")
end

return M
