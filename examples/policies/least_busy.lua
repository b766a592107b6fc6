-- A routing policy: send each request to the backend with the fewest
-- requests in flight, breaking ties by recent latency (EWMA).
local M = { api = 1 }

function M.pick(req, backends)
  local best
  for _, b in ipairs(backends) do
    if not best or b.active < best.active
       or (b.active == best.active and b.ewma_ms < best.ewma_ms) then
      best = b
    end
  end
  return best
end

return M
