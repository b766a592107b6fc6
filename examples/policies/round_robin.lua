-- Plain round robin in Lua: the benchmark's Lua policy, and the smallest
-- example of a policy keeping its own state between calls.
local M = { api = 1 }

local i = 0

function M.pick(req, backends)
  i = i % #backends + 1
  return i
end

return M
