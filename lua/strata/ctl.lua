-- strata.ctl: the commands that talk to a running topology through its admin
-- endpoints: `strata reload` and `strata status`.

local host = require "strata.host"
local cjson = require "cjson.safe"
local text = require "strata.text"

local M = {}

local function post(addr, path)
  local status, body = host.http_request("POST", addr, path, "", 10)
  if not status then return nil, body end
  local doc = cjson.decode(body)
  if type(doc) ~= "table" then return nil, "bad answer from " .. addr .. ": " .. body end
  return doc, nil, status
end

local function node_list(topo, only)
  local out = {}
  for _, n in ipairs(topo.nodes) do
    if not only or n.name == only then out[#out + 1] = n end
  end
  return out
end

-- strata reload: the supervisor starts/stops nodes, then every node reloads
-- its own services (validating first). Returns the exit code.
function M.reload(topo, opts)
  local out, errs = io.stdout, io.stderr
  local q = opts.dry_run and "?dry_run=1" or ""
  local sup = topo.supervisor.admin
  local nodes = node_list(topo, opts.node)
  if opts.node and #nodes == 0 then
    errs:write(string.format("%s: no node named '%s' in this topology\n", topo.file, opts.node))
    return 1
  end
  local reachable = 0
  local failed = false
  local starting = {}
  if sup and not opts.node then
    local doc, err = post(sup, "/reload" .. q)
    if not doc then
      errs:write(string.format("supervisor at %s: %s\n", sup, err))
      return 1
    end
    reachable = reachable + 1
    if not doc.ok then
      errs:write(tostring(doc.error) .. "\n")
      return 1
    end
    for line in tostring(doc.changes or ""):gmatch("[^\n]+") do
      out:write((opts.dry_run and "would " or "") .. line .. "\n")
      local started = line:match("^start node (%S+)")
      if started then starting[started] = true end
    end
  end
  for _, n in ipairs(nodes) do
    if starting[n.name] then
      -- just started by the supervisor with the new topology
    elseif not n.admin then
      errs:write(string.format("node %s: no admin address (set strata.supervisor { admin = ... } or strata.node { admin = ... }); send SIGHUP to reload it\n", n.name))
      failed = true
    else
      local doc, err = post(n.admin, "/reload" .. q)
      if not doc then
        errs:write(string.format("node %s (%s): %s\n", n.name, n.admin, err))
        failed = true
      elseif not doc.ok then
        errs:write(tostring(doc.error) .. "\n")
        failed = true
      else
        reachable = reachable + 1
        local changes = doc.changes or {}
        if #changes == 0 then
          out:write(string.format("node %s: no changes\n", n.name))
        end
        for _, c in ipairs(changes) do
          out:write((opts.dry_run and "would " or "") .. c .. "\n")
        end
        if not opts.dry_run then
          out:write(string.format("node %s: generation %d (%.2f ms)\n", n.name,
                                  math.tointeger(doc.generation) or 0, doc.reload_ms or 0))
        end
      end
    end
  end
  return failed and 1 or 0
end

local function human_bytes(n)
  if type(n) ~= "number" then return "-" end
  for _, u in ipairs { { 1 << 30, "G" }, { 1 << 20, "M" }, { 1 << 10, "K" } } do
    if n >= u[1] then return string.format("%.1f%s", n / u[1], u[2]) end
  end
  return tostring(math.tointeger(n) or n) .. "B"
end

local function num(v, fmt)
  if type(v) ~= "number" then return "-" end
  return string.format(fmt or "%d", fmt and v or math.floor(v + 0.5))
end

local COLUMNS = { "NODE", "SERVICE", "LISTEN", "UP", "GEN", "CONNS", "RPS", "P99MS", "ERRORS",
                  "HIT%", "MEMORY", "LAG", "HEALTH" }

-- Services name their counters after their trade (a balancer counts
-- requests and clients, a cache commands and connections); the table maps
-- them onto common columns.
local function first_number(...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "number" then return v end
  end
end

local function service_row(node, st, s, rate)
  local health = "-"
  if type(s.backends) == "table" and #s.backends > 0 then
    local up = 0
    for _, b in ipairs(s.backends) do
      if b.healthy then up = up + 1 end
    end
    health = string.format("%d/%d", up, #s.backends)
  end
  local lag = "-"
  if type(s.lag_ms) == "number" then lag = string.format("%.1fms", s.lag_ms) end
  -- A db replica (or a primary, its slowest replica): how far behind in
  -- bytes too, once it is behind at all.
  if type(s.lag_bytes) == "number" and s.lag_bytes > 0 then
    lag = lag .. "/" .. human_bytes(s.lag_bytes)
  end
  return {
    node, s.kind or "?", s.listen or "?",
    string.format("%ds", math.floor(st.uptime_s or 0)),
    num(st.generation),
    num(first_number(s.connections, s.clients)),
    num(rate),
    (type(s.p99_ms) == "number" and s.p99_ms >= 0) and string.format("%.1f", s.p99_ms) or "-",
    num(first_number(s.errors, s.errors_sent, s.writes_refused, s.protocol_errors)),
    type(s.hit_ratio) == "number" and string.format("%.1f", s.hit_ratio * 100) or "-",
    human_bytes(s.used_memory),
    lag, health,
  }
end

local function work_done(s)
  return first_number(s.requests, s.commands)
end

-- Every node's /status, as { node = { ok = bool, st = doc, at = time } }.
local function sample(topo, only)
  local out = {}
  for _, n in ipairs(node_list(topo, only)) do
    local entry = { at = host.monotime() }
    if n.admin then
      local status, body = host.http_request("GET", n.admin, "/status", "", 2)
      local st = status == 200 and cjson.decode(body)
      if type(st) == "table" then entry.st = st end
    end
    out[n.name] = entry
  end
  return out
end

-- The table for one sample; rates come from the previous sample. Returns
-- text, all_up.
local function render_sample(topo, only, cur, prev)
  local rows = { COLUMNS }
  local all_up = true
  for _, n in ipairs(node_list(topo, only)) do
    local e = cur[n.name]
    if not n.admin then
      rows[#rows + 1] = { n.name, "-", "-", "no admin address" }
      all_up = false
    elseif not e.st then
      rows[#rows + 1] = { n.name, "-", n.admin, "DOWN" }
      all_up = false
    else
      local p = prev and prev[n.name]
      for i, s in ipairs(e.st.services or {}) do
        local rate
        local ps = p and p.st and p.st.services and p.st.services[i]
        if ps and ps.listen == s.listen and work_done(s) and work_done(ps) and e.at > p.at then
          rate = math.max(0, work_done(s) - work_done(ps)) / (e.at - p.at)
        end
        rows[#rows + 1] = service_row(n.name, e.st, s, rate)
      end
    end
  end
  return text.table(rows), all_up
end

-- One table (two samples half a second apart, for the rates).
function M.snapshot(topo, only)
  local first = sample(topo, only)
  host.sleep(0.5)
  return render_sample(topo, only, sample(topo, only), first)
end

function M.status(topo, opts)
  if not opts.watch then
    local text, up = M.snapshot(topo, opts.node)
    io.stdout:write(text)
    return up and 0 or 1
  end
  local tty = host.isatty(1)
  local left = opts.count or math.huge
  local prev
  while left > 0 do
    local cur = sample(topo, opts.node)
    local out = render_sample(topo, opts.node, cur, prev)
    prev = cur
    if tty then io.stdout:write("\27[H\27[2J") end
    io.stdout:write(os.date("%H:%M:%S  ") .. topo.file .. "\n" .. out)
    io.stdout:flush()
    left = left - 1
    if left > 0 then host.sleep(opts.interval or 1) end
  end
  return 0
end

return M
