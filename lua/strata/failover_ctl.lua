-- strata.failover_ctl: `strata failover TOPOLOGY [--to NODE]`, a planned
-- switch of a data set's primary that loses nothing:
--
--   1. every db node of the data set says where it stands (FAILOVER
--      POSITION: role, epoch, the end of its log);
--   2. the primary stops taking writes (FAILOVER PAUSE: writes are refused
--      with -TRYAGAIN while it lasts) and says where its log ends;
--   3. the target (--to, or the replica furthest along) catches up to
--      exactly that offset;
--   4. the target is promoted in an epoch after every node's;
--   5. the old primary and the other replicas follow it (the old primary's
--      pause ends there; with failover on they would find it by themselves).
--
-- Any failure before step 4 ends the pause and changes nothing. It speaks
-- to the db nodes' own RESP ports with the db's password.

local host = require "strata.host"

local M = {}

local function password_of(cfg)
  if cfg.password then return cfg.password end
  if cfg.password_env then return os.getenv(cfg.password_env) end
  if cfg.password_file then
    local f = io.open(cfg.password_file, "r")
    if not f then return nil end
    local pw = f:read("l")
    f:close()
    return pw
  end
end

-- The data sets: db services grouped by their peers.
local function data_sets(topo)
  local sets, by_node = {}, {}
  for _, n in ipairs(topo.nodes) do
    for _, s in ipairs(n.services) do
      if s.kind == "db" then by_node[s.node] = s end
    end
  end
  local seen = {}
  for name, s in pairs(by_node) do
    if not seen[name] then
      local set = { s }
      seen[name] = true
      for peer in (s.peers or ""):gmatch("([^@,]+)@[^,]*") do
        if by_node[peer] and not seen[peer] then
          set[#set + 1] = by_node[peer]
          seen[peer] = true
        end
      end
      table.sort(set, function(a, b) return a.node < b.node end)
      sets[#sets + 1] = set
    end
  end
  return sets
end

local function call(s, ...)
  return host.resp_call(s.listen, { ... }, password_of(s), 5)
end

local function position(s)
  local line, err = call(s, "FAILOVER", "POSITION")
  if not line then return nil, err end
  local node, role, epoch, log_epoch, offset = line:match("^(%S+) (%S+) (%d+) (%d+) (%d+)$")
  if not node then return nil, s.node .. ": unexpected answer " .. line end
  return { node = node, role = role, epoch = tonumber(epoch), log_epoch = tonumber(log_epoch),
           offset = tonumber(offset) }
end

function M.run(topo, opts)
  local out, errs = io.stdout, io.stderr
  local sets = data_sets(topo)
  local set
  for _, ds in ipairs(sets) do
    for _, s in ipairs(ds) do
      if not opts.to or s.node == opts.to then set = set or ds end
    end
  end
  if not set then
    errs:write(opts.to and string.format("%s: no db node named '%s'\n", topo.file, opts.to)
               or string.format("%s: no db in this topology\n", topo.file))
    return 1
  end
  if #sets > 1 and not opts.to then
    errs:write(topo.file .. ": several data sets: say which with --to NODE\n")
    return 1
  end
  local pos, primary, top_epoch = {}, nil, 0
  for _, s in ipairs(set) do
    local p, err = position(s)
    if p then
      pos[s.node] = p
      if p.epoch > top_epoch then top_epoch = p.epoch end
      if p.role == "primary" and (not primary or p.epoch > pos[primary.node].epoch) then
        primary = s
      end
    else
      out:write(string.format("%-8s unreachable: %s\n", s.node, err))
    end
  end
  if not primary then
    errs:write("no node of the data set answers as the primary; nothing changed\n")
    return 1
  end
  local target
  for _, s in ipairs(set) do
    local p = pos[s.node]
    if s ~= primary and p and (opts.to == nil or s.node == opts.to) then
      if not target or p.offset > pos[target.node].offset then target = s end
    end
  end
  if not target then
    errs:write(opts.to == primary.node
               and string.format("%s is already the primary; nothing changed\n", opts.to)
               or "no replica to switch to answers; nothing changed\n")
    return 1
  end
  local t0 = host.now and host.now() or os.clock()
  local timeout = opts.timeout or 10
  local paused, err = call(primary, "FAILOVER", "PAUSE", tostring(math.floor(timeout * 1000)))
  if not paused then
    errs:write(string.format("%s: cannot pause writes: %s; nothing changed\n", primary.node, err))
    return 1
  end
  local want = tonumber(paused:match("(%d+)$"))
  out:write(string.format("%s: writes paused at offset %d\n", primary.node, want))
  local waited, caught = 0, false
  while waited < timeout do
    local p = position(target)
    if p and p.offset >= want then caught = true break end
    host.sleep(0.01)
    waited = waited + 0.01
  end
  if not caught then
    call(primary, "FAILOVER", "PAUSE", "0")
    errs:write(string.format("%s did not reach offset %d within %gs; writes resumed on %s, "
                             .. "nothing changed\n", target.node, want, timeout, primary.node))
    return 1
  end
  local epoch = top_epoch + 1
  local ok, perr = call(target, "FAILOVER", "PROMOTE", tostring(epoch))
  if not ok then
    call(primary, "FAILOVER", "PAUSE", "0")
    errs:write(string.format("%s: promotion refused: %s; writes resumed on %s, nothing changed\n",
                             target.node, perr, primary.node))
    return 1
  end
  out:write(string.format("%s: promoted in epoch %d at offset %d\n", target.node, epoch, want))
  local rc = 0
  for _, s in ipairs(set) do
    if s ~= target then
      local r, ferr = call(s, "FAILOVER", "FOLLOW", target.node)
      if r then
        out:write(string.format("%s: follows %s\n", s.node, target.node))
      else
        out:write(string.format("%s: could not be told to follow %s: %s\n", s.node, target.node,
                                ferr))
        if s == primary then rc = 1 end
      end
    end
  end
  out:write(string.format("%s is the primary (epoch %d); was %s\n", target.node, epoch,
                          primary.node))
  return rc
end

return M
