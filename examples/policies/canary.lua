-- Canary routing: requests that carry "X-Canary: 1" (or the cookie
-- canary=1) go to the backends whose name starts with "canary"; all other
-- requests are spread round robin over the remaining backends. When no
-- canary backend is available, canary requests take the normal path, and
-- when only canaries are left, everyone uses them.
--
--   strata.balancer { ..., backends = { { name = "web1", addr = ... },
--                                        { name = "canary1", addr = ... } },
--                     policy = "policies/canary.lua" }
local M = { api = 1 }

local turn = 0

local function is_canary(b)
  return b.name:sub(1, 6) == "canary"
end

local function wants_canary(req)
  local h = req.headers
  if h["x-canary"] == "1" then return true end
  local cookie = h["cookie"]
  return cookie ~= nil and cookie:find("canary=1", 1, true) ~= nil
end

-- The n-th (1-based, wrapping) backend for which match(b) == want.
local function nth(backends, want, n)
  local count = 0
  for _, b in ipairs(backends) do
    if is_canary(b) == want then count = count + 1 end
  end
  if count == 0 then return nil end
  local k = (n - 1) % count + 1
  for _, b in ipairs(backends) do
    if is_canary(b) == want then
      k = k - 1
      if k == 0 then return b end
    end
  end
end

function M.pick(req, backends)
  turn = turn + 1
  local canary = wants_canary(req)
  return nth(backends, canary, turn) or nth(backends, not canary, turn)
end

return M
