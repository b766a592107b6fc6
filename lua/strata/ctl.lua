-- strata.ctl: the commands that talk to a running topology through its admin
-- endpoints: `strata reload` and `strata status`.

local host = require "strata.host"
local cjson = require "cjson.safe"
local text = require "strata.text"

local M = {}

-- Every admin answer names who gave it (X-Strata-Node, X-Strata-Topology
-- and the same fields in its JSON), and every request says whom it is for
-- (X-Strata-Expect-*): an endpoint that is someone else answers 409 before
-- doing anything. The command line also checks the answer, and refuses to
-- act on a mismatch: "node at ADDR is cache2 of /a.lua, not cache3 of /b.lua".
-- `who` is { name =, token = }; the token goes as Authorization: Bearer.
-- Returns doc, nil, status | nil, message, status (nil when nothing answered).
local function call(method, addr, path, who, ctx, timeout)
  local headers = {
    ["X-Strata-Expect-Node"] = who.name,
    ["X-Strata-Expect-Topology"] = ctx.path,
  }
  if who.token then headers["Authorization"] = "Bearer " .. who.token end
  local status, body, hdrs = host.http_request(method, addr, path, "", timeout, headers)
  if not status then return nil, body end
  local doc = cjson.decode(body)
  if status == 401 then
    return nil, string.format("%s: 401 unauthorized: the admin token is missing or wrong "
                              .. "(admin_token, admin_token_env or admin_token_file)", addr), status
  end
  if status == 409 then
    return nil, type(doc) == "table" and type(doc.error) == "string" and doc.error
                or (addr .. ": answered by another node"), status
  end
  if type(doc) ~= "table" then
    return nil, "bad answer from " .. addr .. ": " .. tostring(body):sub(1, 200), status
  end
  local node = hdrs["x-strata-node"] or doc.node
  local topology = hdrs["x-strata-topology"] or doc.topology
  if node ~= who.name or topology ~= ctx.path then
    return nil, string.format("node at %s is %s of %s, not %s of %s", addr, tostring(node),
                              tostring(topology), who.name, ctx.path), 409
  end
  return doc, nil, status
end

-- A /reload answer, in its one shape (docs/operations.md):
--   { ok = bool, node = NAME, topology = PATH, dry_run = bool,
--     generation = N, reload_ms = MS, changes = { "...", ... },
--     error = "file:line: message" | null }
local function post_reload(addr, query, who, ctx)
  local doc, err, status = call("POST", addr, "/reload" .. query, who, ctx, 10)
  if not doc then return nil, err, status end
  if type(doc.changes) ~= "table" then doc.changes = {} end
  if doc.error == cjson.null then doc.error = nil end
  return doc, nil, status
end

local function node_list(topo, only)
  local out = {}
  for _, n in ipairs(topo.nodes) do
    if not only or n.name == only then out[#out + 1] = n end
  end
  return out
end

-- Where the nodes listen. The supervisor is the source of truth: it keeps
-- every node's admin address for its lifetime, whatever the topology file
-- says now (a node added, removed or moved up the file). Only when no
-- supervisor answers do the topology's own addresses count. Returns
-- { ctx =, sup =, map = { name -> admin } | nil } or nil, message.
local function locate(topo)
  local ctx = { path = host.realpath(topo.file) or topo.file }
  local loc = { ctx = ctx }
  local sup = topo.supervisor.admin
  if not sup then return loc end
  local doc, err, status = call("GET", sup, "/status",
                                { name = "supervisor", token = topo.supervisor.admin_token },
                                ctx, 3)
  if not doc then
    -- Something answered but is not this topology's supervisor (or will
    -- not say): acting on the file's addresses could reach the wrong nodes.
    if status then return nil, "supervisor at " .. sup .. ": " .. err end
    return loc
  end
  loc.sup = sup
  loc.map = {}
  for _, n in ipairs(type(doc.nodes) == "table" and doc.nodes or {}) do
    if type(n) == "table" and type(n.name) == "string" then
      loc.map[n.name] = (type(n.admin) == "string" and n.admin ~= "") and n.admin or false
    end
  end
  return loc
end

-- A node's admin address: the supervisor's word, else the topology's.
-- nil, reason when there is none.
local function admin_of(loc, n)
  if loc.map then
    local a = loc.map[n.name]
    if a == nil then return nil, "not running (the supervisor does not run it)" end
    if a == false then return nil, "no admin address" end
    return a
  end
  if not n.admin then return nil, "no admin address" end
  return n.admin
end

local NO_ADMIN = "node %s: no admin address (set strata.supervisor { admin = ... } or "
                 .. "strata.node { admin = ... }); send SIGHUP to reload it\n"

-- strata reload: everything is checked first (the supervisor's and every
-- node's dry run: the new topology, each service's new settings and
-- policies); only when all agree does anything change: the supervisor
-- starts and stops nodes, then every remaining node reloads. On any error
-- nothing changes. Returns the exit code.
function M.reload(topo, opts)
  local out, errs = io.stdout, io.stderr
  local nodes = node_list(topo, opts.node)
  if opts.node and #nodes == 0 then
    errs:write(string.format("%s: no node named '%s' in this topology\n", topo.file, opts.node))
    return 1
  end
  local loc, lerr = locate(topo)
  if not loc then
    errs:write(lerr .. "\n")
    return 1
  end
  local ctx = loc.ctx
  local sup_who = { name = "supervisor", token = topo.supervisor.admin_token }
  local with_sup = loc.sup and not opts.node
  -- 1. Check everywhere.
  local starting = {}
  local plan = {}
  if with_sup then
    local doc, err = post_reload(loc.sup, "?dry_run=1", sup_who, ctx)
    if not doc then
      errs:write(string.format("supervisor at %s: %s\n", loc.sup, err))
      return 1
    end
    if not doc.ok then
      errs:write(tostring(doc.error) .. "\n")
      return 1
    end
    plan[#plan + 1] = doc.changes
    for _, line in ipairs(doc.changes) do
      local started = line:match("^start node (%S+)")
      if started then starting[started] = true end
    end
  end
  local targets = {}
  for _, n in ipairs(nodes) do
    if not starting[n.name] then
      local addr, why = admin_of(loc, n)
      if not addr then
        if why == "no admin address" then
          errs:write(string.format(NO_ADMIN, n.name))
        else
          errs:write(string.format("node %s: %s\n", n.name, why))
        end
        return 1
      end
      local who = { name = n.name, token = n.admin_token }
      local doc, err = post_reload(addr, "?dry_run=1", who, ctx)
      if not doc then
        errs:write(string.format("node %s (%s): %s\n", n.name, addr, err))
        return 1
      end
      if not doc.ok then
        errs:write(tostring(doc.error) .. "\n")
        -- The node refuses: ask it for real, which it refuses the same way
        -- and changing nothing, so that its /status and /metrics count the
        -- failed reload and show its error, as for a reload by signal.
        if not opts.dry_run then post_reload(addr, "", who, ctx) end
        return 1
      end
      plan[#plan + 1] = doc.changes
      targets[#targets + 1] = { n = n, addr = addr, who = who, dry = doc }
    end
  end
  if opts.dry_run then
    if with_sup then
      for _, line in ipairs(plan[1]) do out:write("would " .. line .. "\n") end
    end
    for _, t in ipairs(targets) do
      if #t.dry.changes == 0 then out:write(string.format("node %s: no changes\n", t.n.name)) end
      -- "node c1: cache eviction ..." -> "would change node c1: ..."
      for _, c in ipairs(t.dry.changes) do out:write("would change " .. c .. "\n") end
    end
    return 0
  end
  -- 2. Apply.
  local failed = false
  if with_sup then
    local doc, err = post_reload(loc.sup, "", sup_who, ctx)
    if not doc then
      errs:write(string.format("supervisor at %s: %s\n", loc.sup, err))
      return 1
    end
    if not doc.ok then
      errs:write(tostring(doc.error) .. "\n")
      return 1
    end
    for _, line in ipairs(doc.changes) do out:write(line .. "\n") end
  end
  for _, t in ipairs(targets) do
    local doc, err = post_reload(t.addr, "", t.who, ctx)
    if not doc then
      errs:write(string.format("node %s (%s): %s\n", t.n.name, t.addr, err))
      failed = true
    elseif not doc.ok then
      errs:write(tostring(doc.error) .. "\n")
      failed = true
    else
      if #doc.changes == 0 then
        out:write(string.format("node %s: no changes\n", t.n.name))
      end
      for _, c in ipairs(doc.changes) do out:write(c .. "\n") end
      out:write(string.format("node %s: generation %d (%.2f ms)\n", t.n.name,
                              math.tointeger(doc.generation) or 0, doc.reload_ms or 0))
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

-- A hit ratio means nothing before the first lookup: "-", not 0.0.
local function hit_percent(s)
  if type(s.hit_ratio) ~= "number" then return "-" end
  if type(s.hits) == "number" and type(s.misses) == "number" and s.hits + s.misses == 0 then
    return "-"
  end
  return string.format("%.1f", s.hit_ratio * 100)
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
  -- A db node: its role and failover epoch (primary/e3, replica/e3).
  if s.kind == "db" and type(s.role) == "string" then
    health = s.role .. (type(s.epoch) == "number" and ("/e" .. math.floor(s.epoch)) or "")
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
    hit_percent(s),
    human_bytes(s.used_memory),
    lag, health,
  }
end

local function work_done(s)
  return first_number(s.requests, s.commands)
end

-- Every node's /status, as { node = { st = doc | nil, addr =, why =, at = time } }.
local function sample(topo, loc, only)
  local out = {}
  for _, n in ipairs(node_list(topo, only)) do
    local entry = { at = host.monotime() }
    local addr, why = admin_of(loc, n)
    entry.addr, entry.why = addr, why
    if addr then
      local doc, err, status = call("GET", addr, "/status",
                                    { name = n.name, token = n.admin_token }, loc.ctx, 2)
      if doc then
        entry.st = doc
      elseif status == 409 then
        entry.why, entry.err = "WRONG NODE", err
      elseif status == 401 then
        entry.why, entry.err = "UNAUTHORIZED", err
      else
        entry.why = "DOWN"
      end
    end
    out[n.name] = entry
  end
  return out
end

-- The table for one sample; rates come from the previous sample. Returns
-- text, all_up, messages (a wrong node, a refused token).
local function render_sample(topo, only, cur, prev)
  local rows = { COLUMNS }
  local all_up = true
  local notes = {}
  for _, n in ipairs(node_list(topo, only)) do
    local e = cur[n.name]
    if not e.st then
      rows[#rows + 1] = { n.name, "-", e.addr or "-", e.why or "DOWN" }
      if e.err then notes[#notes + 1] = e.err end
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
  return text.table(rows), all_up, notes
end

local function write_notes(notes)
  for _, m in ipairs(notes or {}) do io.stderr:write(m .. "\n") end
end

-- One table (two samples half a second apart, for the rates).
function M.snapshot(topo, only)
  local loc, err = locate(topo)
  if not loc then return nil, false, { err } end
  local first = sample(topo, loc, only)
  host.sleep(0.5)
  return render_sample(topo, only, sample(topo, loc, only), first)
end

function M.status(topo, opts)
  if not opts.watch then
    local out, up, notes = M.snapshot(topo, opts.node)
    if out then io.stdout:write(out) end
    write_notes(notes)
    return up and 0 or 1
  end
  local tty = host.isatty(1)
  local left = opts.count or math.huge
  local prev
  while left > 0 do
    -- asked again every time: a reload may have started or stopped nodes
    local loc, err = locate(topo)
    if not loc then
      io.stderr:write(err .. "\n")
      return 1
    end
    local cur = sample(topo, loc, opts.node)
    local out, _, notes = render_sample(topo, opts.node, cur, prev)
    prev = cur
    if tty then io.stdout:write("\27[H\27[2J") end
    io.stdout:write(os.date("%H:%M:%S  ") .. topo.file .. "\n" .. out)
    io.stdout:flush()
    write_notes(notes)
    left = left - 1
    if left > 0 then host.sleep(opts.interval or 1) end
  end
  return 0
end

return M
