-- A failover policy: which replica becomes the primary when the primary is
-- down. elect(candidates) gets the healthy replicas the electing node sees,
-- each { node =, offset =, epoch =, priority =, self =, waiting = }, and
-- returns a node name (or one of the tables).
--
-- This one keeps the primary in the main room: among the nodes whose log
-- is furthest along it takes the topology's primary when it is one of them
-- (at a start it follows nobody: `waiting`), else a node whose name ends
-- in "a" (db2a, db3a...). A choice whose log is behind another's would be
-- refused by the voters (a majority's WAITed writes must survive), so it
-- never makes one.
local M = { api = 1 }

function M.elect(candidates)
  local best
  for _, c in ipairs(candidates) do
    if not best or c.epoch > best.epoch or (c.epoch == best.epoch and c.offset > best.offset) then
      best = c
    end
  end
  local furthest = {}
  for _, c in ipairs(candidates) do
    if c.epoch == best.epoch and c.offset == best.offset then furthest[#furthest + 1] = c end
  end
  for _, c in ipairs(furthest) do
    if c.waiting then return c.node end
  end
  for _, c in ipairs(furthest) do
    if c.node:sub(-1) == "a" then return c.node end
  end
  return best.node
end

return M
