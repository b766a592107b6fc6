-- strata.topology: the topology DSL.
--
-- A topology script runs with a global `strata` whose constructors
-- (strata.cache, strata.db, strata.web, strata.balancer, strata.node) record
-- declarations. After the script ends, the whole topology is checked
-- (duplicate ports, undefined nodes, policy modules) and normalized into one
-- table that the C runtime starts services from:
--
--   { file = PATH, nodes = { { name =, admin =, services = { CFG, ... } } } }
--
-- Every CFG has kind, node, listen, where ("file:line" of its declaration)
-- and topology (PATH), plus the fields of its kind (docs/topology.md).
-- Every mistake is reported as "file:line: message" pointing at the line of
-- the declaration that holds it.
--
-- The DSL checks structure: known fields, types, addresses, ports, node
-- references and policy modules. Ranges, defaults and the names of built-in
-- policies belong to each service kind's config reader in C, which
-- `strata check`, `strata run` and reload all go through (service_validate,
-- called from engine/runtime/topology.c with each CFG's `where`): a value
-- the DSL passes on unset stays unset here, so the C default applies.

local host = require "strata.host"

local M = {}

local EVICTION_ALIASES = {
  lru = "allkeys-lru", fifo = "allkeys-fifo", lfu = "allkeys-lfu",
  random = "allkeys-random", ttl = "volatile-ttl", noeviction = "noeviction",
}
for _, p in ipairs { "lru", "fifo", "lfu", "random", "ttl" } do
  EVICTION_ALIASES["allkeys-" .. p] = "allkeys-" .. p
  EVICTION_ALIASES["volatile-" .. p] = "volatile-" .. p
end

-- A raised topology error carries its location already; `error(..., 0)`
-- keeps Lua from prefixing the DSL's own file:line.
-- Plain Lua knows the line of a constructor call, not of the fields inside
-- it: find the field a message is about in the source, from the
-- constructor's line to the next constructor, and point at its line. A
-- message names its field quoted ("unknown field 'x'") or as a word
-- ("retries must be ..."); the first such name assigned in the span wins.
local source_cache = {}

local function source_lines(file)
  local lines = source_cache[file]
  if lines == nil then
    lines = false
    local f = io.open(file, "r")
    if f then
      lines = {}
      for l in f:lines() do lines[#lines + 1] = l end
      f:close()
    end
    source_cache[file] = lines
  end
  return lines or nil
end

local function field_line(file, line, msg)
  local lines = source_lines(file)
  if not lines or not lines[line] then return line end
  local names = {}
  for q in msg:gmatch("field '([%a_][%w_]*)'") do names[#names + 1] = q end
  -- The message's subject: what comes before ":", " must", " is", ...,
  -- after a "balancer lb: " style prefix, its words tried last first.
  local function subject_words(subject)
    for _, stop in ipairs({ ":", " must", " is ", " are ", " refers", " (", " not " }) do
      local at = subject:find(stop, 1, true)
      if at then subject = subject:sub(1, at - 1) end
    end
    subject = subject:gsub("'[^']*'", "")
    local words = {}
    for w in subject:gmatch("[%a_][%w_]*") do words[#words + 1] = w end
    for i = #words, 1, -1 do names[#names + 1] = words[i] end
  end
  subject_words((msg:gsub("^%a+ [%w_%-]+: ", "", 1)))
  subject_words(msg)
  for _, name in ipairs(names) do
    for i = line, math.min(#lines, line + 200) do
      local l = lines[i]:gsub("%-%-.*$", "")
      if i > line and l:find("strata%.%a+%s*[{(]") then break end
      local at = l:find("%f[%w_]" .. name .. "%s*=[^=]")
      if at and (i > line or at > (l:find("[{(]") or 0)) then return i end
    end
  end
  return line
end

-- "file:line: message" with the line moved to the field the message is
-- about, when it can be found.
local function at_field(msg)
  local file, line, rest = msg:match("^(.-):(%d+): (.*)$")
  if not file then return msg end
  return string.format("%s:%d: %s", file, field_line(file, tonumber(line), rest), rest)
end

local function fail(where, fmt, ...)
  error({ topology_error = at_field(where .. ": " .. string.format(fmt, ...)) }, 0)
end

-- Lua shortens long chunk names in messages to "...tail"; put the whole
-- path back so that every message starts with a usable file:line.
local function full_path_message(msg, path)
  msg = tostring(msg)
  local tail = msg:match("^%.%.%.(.-):%d+:")
  if tail and path:sub(-#tail) == tail then
    return path .. msg:sub(4 + #tail)
  end
  return msg
end
M.full_path_message = full_path_message
M.at_field = at_field

local function is_policy_path(s)
  return type(s) == "string" and (s:match("%.lua$") or s:find("/", 1, true))
end

-- Builds the per-load context: the declarations seen so far and helpers
-- that check fields against the declaration's location.
local function new_context(path)
  local ctx = {
    path = path,
    dir = path:match("^(.*)/[^/]*$") or ".",
    services = {},   -- every service CFG, in declaration order
    nodes = {},      -- name -> { name, admin, where, services }
    node_order = {},
    refs = {},       -- { name =, kind =, where = } references checked at the end
    objects = setmetatable({}, { __mode = "k" }), -- service objects -> kind
    warnings = {},   -- lines for stderr, written when the topology is valid
  }

  function ctx.where(level)
    -- The first stack frame that belongs to the topology file itself.
    for l = level or 3, 30 do
      local info = debug.getinfo(l, "Sl")
      if not info then break end
      if info.source == "@" .. path and info.currentline > 0 then
        return path .. ":" .. info.currentline
      end
    end
    return path .. ":1"
  end

  function ctx.check_fields(where, what, t, allowed)
    if type(t) ~= "table" then
      fail(where, "%s must be a table, not %s", what, type(t))
    end
    for k in pairs(t) do
      if type(k) ~= "string" or not allowed[k] then
        local names = {}
        for n in pairs(allowed) do names[#names + 1] = n end
        table.sort(names)
        fail(where, "unknown field '%s' in %s (known: %s)", tostring(k), what,
             table.concat(names, ", "))
      end
    end
  end

  function ctx.string(where, what, v, required)
    if v == nil then
      if required then fail(where, "%s is required", what) end
      return nil
    end
    if type(v) ~= "string" or v == "" then
      fail(where, "%s must be a non-empty string, not %s", what, type(v))
    end
    return v
  end

  function ctx.addr(where, what, v)
    ctx.string(where, what, v, true)
    local h, p = v:match("^%[([%x:%.]+)%]:(%d+)$")
    if not h then h, p = v:match("^([%w%.%-]*):(%d+)$") end
    if not h then
      fail(where, "%s: bad address '%s' (want host:port)", what, v)
    end
    local port = tonumber(p)
    if port < 1 or port > 65535 then
      fail(where, "%s: bad port in address '%s' (1-65535)", what, v)
    end
    if h == "" then h = "127.0.0.1" end
    return h .. ":" .. port, h, port
  end

  function ctx.size(where, what, v)
    if v == nil then return nil end
    if math.type(v) == "integer" and v >= 0 then return v end
    if type(v) == "string" then
      local n = host.parse_size(v)
      if n then return n end
    end
    fail(where, "%s: bad size '%s' (want e.g. 64mb, 512kb, 1gb or a byte count)", what,
         tostring(v))
  end

  function ctx.duration(where, what, v)
    if v == nil then return nil end
    if type(v) == "number" and v >= 0 then return v end
    if type(v) == "string" then
      local n = host.parse_duration(v)
      if n then return n end
    end
    fail(where, "%s: bad duration '%s' (want e.g. 500ms, 1s, 2m)", what, tostring(v))
  end

  function ctx.bool(where, what, v)
    if v == nil then return nil end
    if type(v) ~= "boolean" then
      fail(where, "%s must be true or false, not %s", what, tostring(v))
    end
    return v
  end

  -- Its range is the service kind's to check.
  function ctx.int(where, what, v)
    if v == nil then return nil end
    if math.type(v) ~= "integer" then
      fail(where, "%s must be an integer, not %s", what, tostring(v))
    end
    return v
  end

  -- A folder named in the topology (db dir, log_dir) is relative to the
  -- topology file, never to the working directory: the same topology
  -- started from anywhere finds the same data. Returned absolute, so logs
  -- and status show where it really is. The folder may not exist yet.
  function ctx.folder(where, what, v)
    local rel = ctx.string(where, what, v)
    if rel == nil or rel:sub(1, 1) == "/" then return rel end
    local base = host.realpath(ctx.dir) or ctx.dir
    local parts = {}
    for seg in (base .. "/" .. rel):gmatch("[^/]+") do
      if seg == ".." then
        parts[#parts] = nil
      elseif seg ~= "." then
        parts[#parts + 1] = seg
      end
    end
    return "/" .. table.concat(parts, "/")
  end

  -- Finds a file named in the topology: absolute, or relative to the
  -- topology's directory (never the working directory).
  function ctx.resolve(where, what, rel)
    local c = rel:sub(1, 1) == "/" and rel or ctx.dir .. "/" .. rel
    if host.is_file(c) then return host.realpath(c) end
    fail(where, "%s: file '%s' not found (relative paths are relative to the topology's folder)",
         what, rel)
  end

  -- Checks a policy module in a sandboxed state of its own, with the same
  -- library, budget and memory limit as the engine gives it (its top-level
  -- code and validate() cannot freeze the node that checks it), and checks
  -- that it has the functions its kind needs. The engine loads it again in
  -- the state that will run it.
  function ctx.policy(where, what, rel, needs)
    local file = ctx.resolve(where, what, rel)
    local ok, msg, stage = host.check_policy(file, needs)
    if ok then return file end
    if stage == "validate" then
      fail(where, "%s '%s' failed validate(): %s", what, rel, msg)
    elseif stage == "shape" then
      fail(where, "%s '%s': %s", what, rel, msg)
    end
    error({ topology_error = msg }, 0)
  end

  function ctx.add(cfg)
    cfg.topology = path
    ctx.services[#ctx.services + 1] = cfg
    local n = ctx.nodes[cfg.node]
    if not n then
      n = { name = cfg.node, where = cfg.where, services = {} }
      ctx.nodes[cfg.node] = n
      ctx.node_order[#ctx.node_order + 1] = cfg.node
    end
    for _, other in ipairs(n.services) do
      if other.kind == cfg.kind then
        fail(cfg.where, "node '%s' already hosts a %s service (declared at %s)", cfg.node,
             cfg.kind, other.where)
      end
    end
    n.services[#n.services + 1] = cfg
    return cfg
  end

  function ctx.node_name(where, what, v)
    ctx.string(where, what, v, true)
    if not v:match("^[%w_%-%.]+$") or #v > 48 then
      fail(where, "%s: bad node name '%s' (letters, digits, _ - . ; at most 48)", what, v)
    end
    return v
  end

  return ctx
end

-- The constructors ---------------------------------------------------------

-- Who may connect to a cache or db node, and how much they may hold: the
-- same fields on both kinds. The password may come from the topology, an
-- environment variable or a file (relative to the topology's folder); the
-- kind resolves it and checks the ranges.
local ACCESS_FIELDS = { "password", "password_env", "password_file", "debug", "max_clients",
                        "max_client_memory" }

local function access_fields(ctx, where, spec, cfg)
  cfg.password = ctx.string(where, "password", spec.password)
  cfg.password_env = ctx.string(where, "password_env", spec.password_env)
  cfg.password_file = ctx.folder(where, "password_file", spec.password_file)
  cfg.debug = ctx.bool(where, "debug", spec.debug)
  cfg.max_clients = ctx.int(where, "max_clients", spec.max_clients)
  cfg.max_client_memory = ctx.size(where, "max_client_memory", spec.max_client_memory)
  return cfg
end

local function is_loopback(host)
  return host:match("^127%.") ~= nil or host == "::1" or host == "localhost"
end

-- A node anyone on the network can reach with no password: allowed (a
-- private network may be the protection), but said on stderr once the
-- topology is found valid (M.load).
local function warn_open(ctx, cfg)
  if cfg.password or cfg.password_env or cfg.password_file then return end
  local h = cfg.listen:match("^%[?(.-)%]?:%d+$") or cfg.listen
  if is_loopback(h) then return end
  ctx.warnings[#ctx.warnings + 1] = (string.format(
    "%s: warning: %s on node '%s' listens on %s, beyond loopback, without a password " ..
    "(set password_env or password_file; see docs/security.md)\n",
    cfg.where, cfg.kind, cfg.node, cfg.listen))
end

local function build_dsl(ctx)
  local strata = { version = host.version }

  -- An admin endpoint's token: admin_token (the value), admin_token_env
  -- (an environment variable holding it) or admin_token_file (a file
  -- holding it, relative to the topology's folder), at most one. The value
  -- never appears in a message, in `strata check` or in a status.
  local ADMIN_AUTH = { writes = true, all = true }
  local function admin_token(where, spec)
    local n = (spec.admin_token ~= nil and 1 or 0) + (spec.admin_token_env ~= nil and 1 or 0)
              + (spec.admin_token_file ~= nil and 1 or 0)
    if n > 1 then
      fail(where, "set one of admin_token, admin_token_env and admin_token_file")
    end
    local token
    if spec.admin_token ~= nil then
      if type(spec.admin_token) ~= "string" then fail(where, "admin_token must be a string") end
      token = spec.admin_token
    elseif spec.admin_token_env ~= nil then
      local var = ctx.string(where, "admin_token_env", spec.admin_token_env)
      token = os.getenv(var)
      if not token or token == "" then
        fail(where, "admin_token_env: environment variable %s is not set", var)
      end
    elseif spec.admin_token_file ~= nil then
      local path = ctx.folder(where, "admin_token_file", spec.admin_token_file)
      local f, err = io.open(path, "r")
      if not f then fail(where, "admin_token_file: cannot read %s", path) end
      token = (f:read("a") or ""):gsub("%s+$", "")
      f:close()
      if err then token = nil end
    end
    if token == nil then return nil end
    if #token < 16 then
      fail(where, "the admin token must be at least 16 characters")
    end
    if #token > 256 or token:find("[%c%s]") then
      fail(where, "the admin token must be at most 256 characters, without spaces or control characters")
    end
    return token
  end
  local function admin_auth(where, v)
    if v == nil then return nil end
    if not ADMIN_AUTH[v] then fail(where, "admin_auth must be \"writes\" or \"all\"") end
    return v
  end

  function strata.node(spec)
    local where = ctx.where()
    ctx.check_fields(where, "strata.node", spec, {
      name = true, admin = true, admin_token = true, admin_token_env = true,
      admin_token_file = true, admin_auth = true,
    })
    local name = ctx.node_name(where, "node name", spec.name)
    local admin = spec.admin and ctx.addr(where, "admin", spec.admin)
    ctx.refs[#ctx.refs + 1] = { name = name, where = where, node_settings = {
      admin = admin, admin_explicit = admin ~= nil or nil, admin_where = where,
      admin_token = admin_token(where, spec), admin_auth = admin_auth(where, spec.admin_auth),
    } }
  end

  -- Settings of the whole running topology. `admin` is the supervisor's
  -- admin address; nodes without an admin address of their own get the
  -- following ports, in declaration order.
  function strata.supervisor(spec)
    local where = ctx.where()
    if ctx.supervisor then
      fail(where, "strata.supervisor is already set (at %s)", ctx.supervisor.where)
    end
    ctx.check_fields(where, "strata.supervisor", spec, {
      admin = true, watch = true, log_dir = true, drain_timeout = true, stall_timeout = true,
      admin_token = true, admin_token_env = true, admin_token_file = true, admin_auth = true,
    })
    if spec.watch ~= nil and type(spec.watch) ~= "boolean" then
      fail(where, "watch must be true or false")
    end
    local stall = ctx.duration(where, "stall_timeout", spec.stall_timeout)
    if stall ~= nil and stall < 0.5 then
      fail(where, "stall_timeout must be at least 500ms (a node beats every 250ms)")
    end
    local admin, ahost, aport
    if spec.admin ~= nil then admin, ahost, aport = ctx.addr(where, "admin", spec.admin) end
    ctx.supervisor = {
      where = where, admin = admin, admin_host = ahost, admin_port = aport,
      admin_token = admin_token(where, spec), admin_auth = admin_auth(where, spec.admin_auth),
      watch = spec.watch or false,
      log_dir = ctx.folder(where, "log_dir", spec.log_dir),
      drain_timeout = ctx.duration(where, "drain_timeout", spec.drain_timeout) or 10,
      stall_timeout = stall,
    }
  end

  function strata.cache(spec)
    local where = ctx.where()
    local fields = {
      shards = true, max_memory = true, eviction = true, eviction_samples = true,
      eviction_fallback = true, invalidate_from = true, invalidate_keys = true,
    }
    for _, f in ipairs(ACCESS_FIELDS) do fields[f] = true end
    ctx.check_fields(where, "strata.cache", spec, fields)
    if type(spec.shards) ~= "table" or #spec.shards == 0 then
      fail(where, "strata.cache needs shards = { { node = ..., listen = ... }, ... }")
    end
    -- Short names are the DSL's sugar for the engine's policy names; any
    -- other name goes on to the cache, which knows its policies.
    local eviction, eviction_path
    if spec.eviction ~= nil then
      ctx.string(where, "eviction", spec.eviction)
      if is_policy_path(spec.eviction) then
        eviction = "lua"
        eviction_path = ctx.policy(where, "eviction policy", spec.eviction, { "choose" })
      else
        eviction = EVICTION_ALIASES[spec.eviction] or spec.eviction
      end
    end
    local fallback = ctx.string(where, "eviction_fallback", spec.eviction_fallback)
    fallback = fallback and (EVICTION_ALIASES[fallback] or fallback)
    -- invalidate_from: a db (the value strata.db returned); every shard
    -- follows its primary's change stream with the db's own password, and
    -- knows every db node to find the new primary after a failover.
    local from = spec.invalidate_from
    if from ~= nil and (type(from) ~= "table" or ctx.objects[from] ~= "db") then
      fail(where, "invalidate_from must be the value returned by strata.db{...}")
    end
    local keys_path
    if spec.invalidate_keys ~= nil then
      if from == nil then fail(where, "invalidate_keys needs invalidate_from") end
      ctx.string(where, "invalidate_keys", spec.invalidate_keys)
      keys_path = ctx.policy(where, "invalidate_keys", spec.invalidate_keys, { "keys" })
    end
    local stream = from and from.stream
    local obj = { kind = "cache", shards = {} }
    -- what a web node needs to log in (strata.web's cache)
    obj.access = { password = ctx.string(where, "password", spec.password),
                   password_env = ctx.string(where, "password_env", spec.password_env),
                   password_file = ctx.folder(where, "password_file", spec.password_file) }
    for i, sh in ipairs(spec.shards) do
      local what = string.format("cache shard %d", i)
      ctx.check_fields(where, what, sh, { node = true, listen = true })
      local cfg = ctx.add(access_fields(ctx, where, spec, {
        kind = "cache", where = where,
        node = ctx.node_name(where, what .. " node", sh.node),
        listen = ctx.addr(where, what .. " listen", sh.listen),
        max_memory = ctx.size(where, "max_memory", spec.max_memory),
        eviction = eviction, eviction_path = eviction_path,
        eviction_fallback = fallback,
        eviction_samples = ctx.int(where, "eviction_samples", spec.eviction_samples),
        invalidate_from = stream and stream.addr,
        invalidate_from_node = stream and stream.node,
        invalidate_nodes = stream and stream.nodes,
        invalidate_timeout = stream and stream.repl_timeout,
        invalidate_password = stream and stream.password,
        invalidate_password_env = stream and stream.password_env,
        invalidate_password_file = stream and stream.password_file,
        invalidate_keys = keys_path,
      }))
      warn_open(ctx, cfg)
      obj.shards[i] = { node = cfg.node, addr = cfg.listen }
    end
    ctx.objects[obj] = "cache"
    return obj
  end

  function strata.db(spec)
    local where = ctx.where()
    local fields = { primary = true, replicas = true, reads = true, read_your_writes = true,
                     compact_min = true, backlog = true, repl_timeout = true, min_replicas = true,
                     max_lag = true, failover = true }
    for _, f in ipairs(ACCESS_FIELDS) do fields[f] = true end
    ctx.check_fields(where, "strata.db", spec, fields)
    if type(spec.primary) ~= "table" then
      fail(where, "strata.db needs primary = { node = ..., listen = ..., dir = ... }")
    end
    local db_fields = { node = true, listen = true, dir = true, fsync = true, replica_of = true,
                        via = true, priority = true }
    -- failover = { down_after = "1s", policy = "policies/failover.lua" }:
    -- the db nodes probe each other and elect a new primary (docs/db.md)
    local fo_down, fo_policy
    if spec.failover ~= nil then
      if type(spec.failover) ~= "table" then
        fail(where, "failover must be a table: failover = { down_after = \"1s\", policy = ... }")
      end
      ctx.check_fields(where, "failover", spec.failover, { down_after = true, policy = true })
      fo_down = ctx.duration(where, "failover down_after", spec.failover.down_after or "1s")
      if fo_down <= 0 then fail(where, "failover down_after must be over 0") end
      if spec.failover.policy ~= nil then
        if not is_policy_path(spec.failover.policy) then
          fail(where, "failover policy must be a .lua file, not '%s'", tostring(spec.failover.policy))
        end
        fo_policy = ctx.policy(where, "failover policy", spec.failover.policy, { "elect" })
      end
    end
    local members = {}
    local function one(t, what, role)
      ctx.check_fields(where, what, t, db_fields)
      local node = ctx.node_name(where, what .. " node", t.node)
      local cfg = ctx.add(access_fields(ctx, where, spec, {
        kind = "db", where = where, role = role, node = node,
        listen = ctx.addr(where, what .. " listen", t.listen),
        -- the default lives here with the resolution: var/NODE beside the topology
        dir = ctx.folder(where, what .. " dir", t.dir or ("var/" .. node)),
        fsync = ctx.string(where, what .. " fsync", t.fsync),
        compact_min = ctx.size(where, "compact_min", spec.compact_min),
        backlog = ctx.size(where, "backlog", spec.backlog),
        repl_timeout = ctx.duration(where, "repl_timeout", spec.repl_timeout),
        min_replicas = ctx.int(where, "min_replicas", spec.min_replicas),
        max_lag = ctx.duration(where, "max_lag", spec.max_lag),
        priority = ctx.int(where, what .. " priority", t.priority),
        failover_down_after = fo_down,
        failover_policy = fo_policy,
      }))
      warn_open(ctx, cfg)
      members[#members + 1] = cfg
      return cfg
    end
    local primary = one(spec.primary, "db primary", "primary")
    if spec.primary.replica_of ~= nil then
      fail(where, "db primary cannot have replica_of")
    end
    local obj = { kind = "db", primary = { node = primary.node, addr = primary.listen }, replicas = {} }
    -- What a cache that invalidates from this db needs to follow its
    -- primary's change stream (strata.cache's invalidate_from).
    obj.stream = { node = primary.node, addr = primary.listen, repl_timeout = primary.repl_timeout,
                   password = primary.password, password_env = primary.password_env,
                   password_file = primary.password_file }
    for i, r in ipairs(spec.replicas or {}) do
      local cfg = one(r, string.format("db replica %d", i), "replica")
      cfg.replica_of = r.replica_of or primary.node
      -- `via`: the address this replica dials to reach its upstream, when
      -- something stands between them (a proxy, a NAT); its listen otherwise
      local via = r.via ~= nil and ctx.addr(where, string.format("db replica %d via", i), r.via)
      ctx.refs[#ctx.refs + 1] = { name = cfg.replica_of, kind = "db", where = where,
                                  what = "replica_of", fill = cfg, via = via or nil }
      obj.replicas[i] = { node = cfg.node, addr = cfg.listen }
    end
    -- a cache follows whichever of these is the primary (after a failover
    -- too): every db node, "name@listen,..."
    local all = {}
    for _, m in ipairs(members) do all[#all + 1] = m.node .. "@" .. m.listen end
    obj.stream.nodes = table.concat(all, ",")
    -- every db node knows the others (probes, votes, FAILOVER FOLLOW <node>)
    for _, m in ipairs(members) do
      local peers = {}
      for _, o in ipairs(members) do
        if o ~= m then
          peers[#peers + 1] = string.format("%s@%s@%d", o.node, o.listen, o.priority or 100)
        end
      end
      m.peers = table.concat(peers, ",")
    end
    local reads = spec.reads or "primary"
    if reads ~= "primary" and reads ~= "replicas" then
      if not is_policy_path(reads) then
        fail(where, "reads must be 'primary', 'replicas' or a policy .lua file, not '%s'", tostring(reads))
      end
      reads = ctx.policy(where, "read policy", reads, { "route" })
    end
    obj.reads = reads
    -- a web node's reads after a write of the same session see that write
    obj.read_your_writes = ctx.bool(where, "read_your_writes", spec.read_your_writes)
    ctx.objects[obj] = "db"
    return obj
  end

  local function service_ref(where, what, v, kind)
    if v == nil then return nil end
    if type(v) == "table" and ctx.objects[v] == kind then return v end
    fail(where, "%s must be the value returned by strata.%s{...}", what, kind)
  end

  -- The web tier: nodes serving one app file (docs/web.md) and/or a static
  -- folder, talking to a cache and a db with those services' own passwords.
  local STATIC_FIELDS = { root = true, prefix = true, max_age = true, precompressed = true,
                          index = true }
  local function web_static(where, v)
    if v == nil then return nil end
    local spec = v
    if type(v) == "string" then spec = { root = v } end
    if type(spec) ~= "table" then
      fail(where, "static must be a folder or a table { root = ..., prefix = ... }")
    end
    ctx.check_fields(where, "static", spec, STATIC_FIELDS)
    local root = ctx.string(where, "static root", spec.root, true)
    local dir = root:sub(1, 1) == "/" and root or ctx.dir .. "/" .. root
    if not host.is_dir(dir) then fail(where, "static: directory '%s' not found", root) end
    local prefix = ctx.string(where, "static prefix", spec.prefix)
    if prefix ~= nil and prefix:sub(1, 1) ~= "/" then
      fail(where, "static prefix must start with '/', not '%s'", prefix)
    end
    local index = spec.index
    if index ~= nil and index ~= false then index = ctx.string(where, "static index", index) end
    local max_age = ctx.duration(where, "static max_age", spec.max_age)
    return {
      root = host.realpath(dir), prefix = prefix,
      max_age = max_age and math.floor(max_age),
      precompressed = ctx.bool(where, "static precompressed", spec.precompressed),
      index = index == false and "" or index,
    }
  end

  function strata.web(spec)
    local where = ctx.where()
    ctx.check_fields(where, "strata.web", spec, {
      nodes = true, app = true, static = true, cache = true, db = true, workers = true,
      timeout = true, memory = true, max_body = true,
    })
    if type(spec.nodes) ~= "table" or #spec.nodes == 0 then
      fail(where, "strata.web needs nodes = { { node = ..., listen = ... }, ... }")
    end
    if spec.app == nil and spec.static == nil then
      fail(where, "strata.web needs an app, a static folder, or both")
    end
    -- The app is loaded by the web kind itself (strata check too): it needs
    -- the web tier's globals, which a plain policy state does not have.
    local app = spec.app ~= nil and ctx.resolve(where, "web app", ctx.string(where, "app", spec.app))
    local static = web_static(where, spec.static)
    local cache = service_ref(where, "cache", spec.cache, "cache")
    local db = service_ref(where, "db", spec.db, "db")
    local workers = ctx.int(where, "workers", spec.workers)
    local timeout = ctx.duration(where, "timeout", spec.timeout)
    local memory = ctx.size(where, "memory", spec.memory)
    local max_body = ctx.size(where, "max_body", spec.max_body)
    local obj = { kind = "web", nodes = {} }
    for i, n in ipairs(spec.nodes) do
      local what = string.format("web node %d", i)
      ctx.check_fields(where, what, n, { node = true, listen = true, weight = true })
      local cfg = ctx.add {
        kind = "web", where = where,
        node = ctx.node_name(where, what .. " node", n.node),
        listen = ctx.addr(where, what .. " listen", n.listen),
        app = app or nil, static = static,
        workers = workers, timeout = timeout, memory = memory, max_body = max_body,
        cache = cache and { shards = cache.shards, password = cache.access.password,
                            password_env = cache.access.password_env,
                            password_file = cache.access.password_file },
        db = db and { primary = db.primary, replicas = db.replicas, reads = db.reads,
                      read_your_writes = db.read_your_writes,
                      password = db.stream.password, password_env = db.stream.password_env,
                      password_file = db.stream.password_file },
      }
      obj.nodes[i] = { name = cfg.node, addr = cfg.listen,
                       weight = ctx.int(where, what .. " weight", n.weight) }
    end
    ctx.objects[obj] = "web"
    return obj
  end

  function strata.balancer(spec)
    local where = ctx.where()
    ctx.check_fields(where, "strata.balancer", spec, {
      node = true, listen = true, backends = true, policy = true, fallback = true,
      hash_on = true, health = true, retries = true, connect_timeout = true,
      server_timeout = true, client_timeout = true, head_timeout = true, max_conns = true,
      max_header_size = true, max_headers = true, max_request_line = true, passive = true,
      slow_start = true, access_log = true,
      tunnel_timeout = true, pool_idle_timeout = true, pool_max_idle = true,
    })
    -- access_log = { path = "var/access.log" | "stderr", format = "combined" | "json" }:
    -- a relative path is the topology folder's; the format is the balancer's to check.
    local access_log
    if spec.access_log ~= nil then
      if type(spec.access_log) ~= "table" then
        fail(where, "access_log must be a table { path = ..., format = ... }")
      end
      ctx.check_fields(where, "access_log", spec.access_log, { path = true, format = true })
      local path = ctx.string(where, "access_log.path", spec.access_log.path, true)
      access_log = {
        path = path == "stderr" and path or ctx.folder(where, "access_log.path", path),
        format = ctx.string(where, "access_log.format", spec.access_log.format),
      }
    end
    local cfg = {
      kind = "balancer", where = where,
      node = ctx.node_name(where, "balancer node", spec.node),
      listen = ctx.addr(where, "balancer listen", spec.listen),
      retries = ctx.int(where, "retries", spec.retries),
      connect_timeout = ctx.duration(where, "connect_timeout", spec.connect_timeout),
      server_timeout = ctx.duration(where, "server_timeout", spec.server_timeout),
      client_timeout = ctx.duration(where, "client_timeout", spec.client_timeout),
      head_timeout = ctx.duration(where, "head_timeout", spec.head_timeout),
      tunnel_timeout = ctx.duration(where, "tunnel_timeout", spec.tunnel_timeout),
      pool_idle_timeout = ctx.duration(where, "pool_idle_timeout", spec.pool_idle_timeout),
      pool_max_idle = ctx.int(where, "pool_max_idle", spec.pool_max_idle),
      slow_start = ctx.duration(where, "slow_start", spec.slow_start),
      max_conns = ctx.int(where, "max_conns", spec.max_conns),
      max_header_size = ctx.size(where, "max_header_size", spec.max_header_size),
      max_headers = ctx.int(where, "max_headers", spec.max_headers),
      max_request_line = ctx.size(where, "max_request_line", spec.max_request_line),
      access_log = access_log,
      backends = {},
    }
    -- Backends: a web service object, or a list of "host:port" strings,
    -- web node names, or { addr =, weight =, name = } tables.
    local b = spec.backends
    if type(b) ~= "table" then
      fail(where, "backends must be a web service (strata.web{...}) or a list of \"host:port\"")
    end
    local list = ctx.objects[b] == "web" and b.nodes or b
    if ctx.objects[b] and ctx.objects[b] ~= "web" then
      fail(where, "backends must be a web service, not a %s service", ctx.objects[b])
    end
    if #list == 0 then fail(where, "backends is empty") end
    for i, e in ipairs(list) do
      local what = string.format("backend %d", i)
      if type(e) == "string" and not e:find(":", 1, true) then
        local ref = { name = e }
        ctx.refs[#ctx.refs + 1] = { name = e, kind = "web", where = where, what = "backend",
                                    fill = ref }
        cfg.backends[i] = ref
      elseif type(e) == "string" then
        local a = ctx.addr(where, what, e)
        cfg.backends[i] = { name = a, addr = a }
      elseif type(e) == "table" then
        if not ctx.objects[b] then
          ctx.check_fields(where, what, e, { addr = true, weight = true, name = true,
                                             max_active = true })
        end
        local a = ctx.addr(where, what .. " addr", e.addr)
        cfg.backends[i] = { name = ctx.string(where, what .. " name", e.name) or a, addr = a,
                            weight = ctx.int(where, what .. " weight", e.weight),
                            max_active = ctx.int(where, what .. " max_active", e.max_active) }
      else
        fail(where, "%s must be \"host:port\" or a table, not %s", what, type(e))
      end
    end
    -- A .lua file is a Lua policy; any other name is the balancer's to know.
    local policy = ctx.string(where, "policy", spec.policy)
    if is_policy_path(policy) then
      cfg.policy = "lua"
      cfg.policy_path = ctx.policy(where, "balancer policy", policy, { "pick" })
    else
      cfg.policy = policy
    end
    cfg.fallback = ctx.string(where, "fallback", spec.fallback)
    cfg.hash_on = ctx.string(where, "hash_on", spec.hash_on)
    if spec.health ~= nil then
      local h = spec.health
      ctx.check_fields(where, "health", h, { path = true, interval = true, timeout = true,
                                             rise = true, fall = true })
      cfg.health = {
        path = ctx.string(where, "health path", h.path),
        interval = ctx.duration(where, "health interval", h.interval),
        timeout = ctx.duration(where, "health timeout", h.timeout),
        rise = ctx.int(where, "health rise", h.rise),
        fall = ctx.int(where, "health fall", h.fall),
      }
    end
    if spec.passive == false then
      cfg.passive = false   -- no passive ejection: only active checks decide
    elseif spec.passive ~= nil then
      ctx.check_fields(where, "passive", spec.passive, { errors = true, cooldown = true })
      cfg.passive = {
        errors = ctx.int(where, "passive errors", spec.passive.errors),
        cooldown = ctx.duration(where, "passive cooldown", spec.passive.cooldown),
      }
    end
    ctx.add(cfg)
    return { kind = "balancer", node = cfg.node, addr = cfg.listen }
  end

  return strata
end

-- Whole-topology checks, after the script has run ---------------------------

local function finish(ctx)
  if #ctx.services == 0 then
    fail(ctx.path .. ":1", "the topology declares no service")
  end
  -- References to nodes by name.
  for _, r in ipairs(ctx.refs) do
    local n = ctx.nodes[r.name]
    if r.node_settings then
      if not n then
        fail(r.where, "strata.node names undefined node '%s' (no service runs on it)", r.name)
      end
      for k, v in pairs(r.node_settings) do n[k] = v end
    else
      local svc
      for _, s in ipairs(n and n.services or {}) do
        if s.kind == r.kind then svc = s end
      end
      if not svc then
        fail(r.where, "%s refers to undefined node '%s'%s", r.what, r.name,
             n and (" (it hosts no " .. r.kind .. " service)") or "")
      end
      if r.what == "backend" then
        r.fill.addr = svc.listen
      elseif r.what == "replica_of" then
        if svc == r.fill then fail(r.where, "db node '%s' cannot replicate itself", r.name) end
        r.fill.replica_of_addr = r.via or svc.listen
      end
    end
  end
  -- Admin addresses: explicit ones first, then the supervisor's port + 1, +2...
  local sup = ctx.supervisor
  if sup and sup.admin then
    local next_port = sup.admin_port + 1
    for _, name in ipairs(ctx.node_order) do
      local n = ctx.nodes[name]
      if not n.admin then
        if next_port > 65535 then
          fail(sup.where, "not enough ports after admin %s for every node", sup.admin)
        end
        n.admin = sup.admin_host .. ":" .. next_port
        next_port = next_port + 1
      end
    end
  end
  -- Authentication: a node without a token of its own has the
  -- supervisor's; an admin address beyond loopback needs a token.
  local function loopback(addr)
    local h = addr:match("^%[?(.-)%]?:%d+$")
    return h == "localhost" or h == "::1" or (h:match("^127%.%d+%.%d+%.%d+$") ~= nil)
  end
  if sup and sup.admin and not sup.admin_token and not loopback(sup.admin) then
    fail(sup.where, "admin %s is not on loopback: anyone who reaches it could reload the "
         .. "topology; set admin_token, admin_token_env or admin_token_file", sup.admin)
  end
  for _, name in ipairs(ctx.node_order) do
    local n = ctx.nodes[name]
    if n.admin and not n.admin_token and sup then n.admin_token = sup.admin_token end
    if n.admin and sup then n.admin_auth = n.admin_auth or sup.admin_auth end
    if n.admin and not n.admin_token and not loopback(n.admin) then
      fail(n.admin_where or (sup and sup.where) or n.where,
           "admin %s of node '%s' is not on loopback: anyone who reaches it could reload "
           .. "the node; set admin_token, admin_token_env or admin_token_file", n.admin, name)
    end
  end
  -- Every listening address must be unique; a wildcard host clashes with
  -- any host on the same port.
  local seen = {}
  local function claim(addr, where, what)
    local h, p = addr:match("^%[?(.-)%]?:(%d+)$")
    for _, prev in ipairs(seen) do
      if prev.port == p and (prev.host == h or h == "0.0.0.0" or prev.host == "0.0.0.0"
                             or h == "::" or prev.host == "::") then
        fail(where, "duplicate port: %s %s is already used by %s (declared at %s)", what, addr,
             prev.what, prev.where)
      end
    end
    seen[#seen + 1] = { host = h, port = p, where = where, what = what }
  end
  for _, s in ipairs(ctx.services) do
    claim(s.listen, s.where, s.kind .. " on node '" .. s.node .. "'")
  end
  if sup and sup.admin then claim(sup.admin, sup.where, "the supervisor's admin") end
  for _, name in ipairs(ctx.node_order) do
    local n = ctx.nodes[name]
    if n.admin then claim(n.admin, n.where, "admin of node '" .. name .. "'") end
  end
  local out = { file = ctx.path, nodes = {},
                supervisor = sup or { watch = false, drain_timeout = 10 } }
  out.supervisor.where = nil
  for _, name in ipairs(ctx.node_order) do
    local n = ctx.nodes[name]
    out.nodes[#out.nodes + 1] = { name = name, admin = n.admin, where = n.where,
                                  services = n.services, admin_explicit = n.admin_explicit,
                                  admin_token = n.admin and n.admin_token or nil,
                                  admin_auth = n.admin and (n.admin_auth or "writes") or nil }
  end
  return out
end

-- Loads and checks a topology file. Returns the normalized table, or nil and
-- "file:line: message".
function M.load(path)
  local ctx = new_context(path)
  local env = setmetatable({ strata = build_dsl(ctx) }, { __index = _G })
  local chunk, err = loadfile(path, "t", env)
  if not chunk then
    return nil, full_path_message(err, path)
  end
  local ok, res = pcall(function()
    chunk()
    return finish(ctx)
  end)
  if ok then
    -- the command line prints them, once per start (not per node process)
    res.warnings = ctx.warnings
    return res
  end
  if type(res) == "table" and res.topology_error then return nil, res.topology_error end
  -- A plain Lua error inside the script already carries file:line.
  return nil, full_path_message(res, path)
end

local function human_size(n)
  if n == 0 then return "unlimited" end
  for _, u in ipairs { { 1 << 30, "gb" }, { 1 << 20, "mb" }, { 1 << 10, "kb" } } do
    if n >= u[1] and n % u[1] == 0 then return (n // u[1]) .. u[2] end
  end
  return tostring(n) .. "b"
end

-- What the topology sets; a setting left out runs with its default
-- (docs/topology.md), which the service kind decides and the table omits.
local function details(s)
  local out = {}
  local function put(k, v)
    if v ~= nil then out[#out + 1] = k .. "=" .. tostring(v) end
  end
  if s.kind == "cache" then
    put("max_memory", s.max_memory and human_size(s.max_memory))
    put("eviction", s.eviction == "lua" and s.eviction_path or s.eviction)
    put("invalidate_from", s.invalidate_from_node)
    put("invalidate_keys", s.invalidate_keys)
    return #out > 0 and table.concat(out, " ") or "defaults"
  elseif s.kind == "db" then
    out[1] = s.role
    put("dir", s.dir)
    put("fsync", s.fsync)
    put("replica_of", s.replica_of)
    return table.concat(out, " ")
  elseif s.kind == "web" then
    put("app", s.app)
    put("static", s.static and s.static.root)
    put("workers", s.workers)
    if s.cache then out[#out + 1] = "cache" end
    if s.db then out[#out + 1] = "db" .. (s.db.read_your_writes and "(read_your_writes)" or "") end
    return table.concat(out, " ")
  elseif s.kind == "balancer" then
    local names = {}
    for _, b in ipairs(s.backends) do names[#names + 1] = b.addr end
    put("policy", s.policy == "lua" and s.policy_path or s.policy)
    put("backends", table.concat(names, ","))
    if s.health then put("health", s.health.path or "on") end
    return table.concat(out, " ")
  end
  return ""
end

-- A canonical text of a service config, to tell whether a reload changed
-- it. The declaration's line is left out: moving a block is no change. The
-- policy and app files a config names count with their contents: editing a
-- policy is a change even when the topology stays the same.
local FILE_FIELDS = { eviction_path = true, policy_path = true, app = true, password_file = true,
                      failover_policy = true,
                      invalidate_keys = true, invalidate_password_file = true }

function M.fingerprint(cfg)
  local out = {}
  for k in pairs(FILE_FIELDS) do
    local path = type(cfg) == "table" and cfg[k]
    if type(path) == "string" then
      local f = io.open(path, "rb")
      out[#out + 1] = k .. "#" .. (f and f:read("a") or "(unreadable)") .. "#"
      if f then f:close() end
    end
  end
  local function put(v)
    local t = type(v)
    if t == "table" then
      local keys = {}
      for k in pairs(v) do
        if k ~= "where" then keys[#keys + 1] = k end
      end
      table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
      out[#out + 1] = "{"
      for _, k in ipairs(keys) do
        out[#out + 1] = tostring(k) .. "="
        put(v[k])
        out[#out + 1] = ","
      end
      out[#out + 1] = "}"
    elseif t == "string" then
      out[#out + 1] = string.format("%q", v)
    else
      out[#out + 1] = tostring(v)
    end
  end
  put(cfg)
  return table.concat(out)
end

-- How an admin endpoint is guarded, for `strata check` (never the token).
local function auth_details(n)
  if not n.admin_token then return "no token (loopback)" end
  return (n.admin_auth == "all") and "token required for every request"
         or "token required for /reload"
end

-- The table `strata check` prints.
function M.describe(topo)
  local rows = { { "NODE", "SERVICE", "LISTEN", "POLICY / DETAILS" } }
  local nservices = 0
  for _, n in ipairs(topo.nodes) do
    for _, s in ipairs(n.services) do
      nservices = nservices + 1
      rows[#rows + 1] = { n.name, s.kind, s.listen, details(s) }
    end
    if n.admin then rows[#rows + 1] = { n.name, "admin", n.admin, auth_details(n) } end
  end
  if topo.supervisor.admin then
    local d = auth_details(topo.supervisor)
    if topo.supervisor.watch then d = d .. ", watch" end
    rows[#rows + 1] = { "(supervisor)", "admin", topo.supervisor.admin, d }
  end
  local out = require("strata.text").table(rows)
  local function plural(n, word) return n .. " " .. word .. (n == 1 and "" or "s") end
  return out .. string.format("%s: ok (%s, %s)\n", topo.file, plural(#topo.nodes, "node"),
                             plural(nservices, "service"))
end

return M
