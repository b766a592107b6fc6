-- Latency-aware weighted choice: two backends are drawn at random and the
-- one with the lower expected cost wins, where cost grows with the requests
-- already in flight and with the recent response latency (EWMA), and
-- shrinks with the configured weight. A slow backend gets less traffic
-- without being starved: it still wins whenever it is drawn against a
-- slower or busier one, which keeps its latency estimate fresh.
local M = { api = 1 }

local function cost(b)
  return (b.active + 1) * (b.ewma_ms + 1) / math.max(b.weight, 1)
end

function M.pick(req, backends)
  local n = #backends
  if n == 0 then return nil end
  if n == 1 then return backends[1] end
  local i = math.random(n)
  local j = math.random(n - 1)
  if j >= i then j = j + 1 end
  local a, b = backends[i], backends[j]
  if cost(a) <= cost(b) then return a end
  return b
end

function M.validate()
  return true
end

return M
