-- strata.web_app: the Lua half of a web request, loaded into every app state
-- (engine/web/web_app.c) before the app file. The C half runs each request
-- as a coroutine of run(handler, ctx) and reads what run returns; ctx:json
-- and ctx:cached are written here because they are plain Lua over the C
-- primitives (ctx.cache, the single-flight calls in `prim`).
--
-- Called with (cjson, prim); returns { run =, json =, cached = }.
local cjson, prim = ...
local type, tostring, pcall, error, pairs, ipairs = type, tostring, pcall, error, pairs, ipairs
local math_type, random, sub, byte = math.type, math.random, string.sub, string.byte
local encode_json, decode_json = cjson.encode, cjson.decode

local M = {}

-- A handler's headers as a flat list name, value, name, value...; a table
-- value gives the header once per element (Set-Cookie).
local function header_list(h)
  if h == nil then return nil end
  if type(h) ~= "table" then
    error("an answer's headers must be a table, not " .. type(h), 0)
  end
  local out, n = {}, 0
  for k, v in pairs(h) do
    if type(k) ~= "string" then error("header names must be strings", 0) end
    if type(v) == "table" then
      for _, one in ipairs(v) do
        out[n + 1], out[n + 2] = k, tostring(one)
        n = n + 2
      end
    else
      out[n + 1], out[n + 2] = k, tostring(v)
      n = n + 2
    end
  end
  return out
end

-- status (nil: the one ctx:status set), body, kind (0 none, 1 text, 2 JSON), headers
function M.run(handler, ctx)
  local status, body, headers = handler(ctx)
  if status == nil then return nil, nil, 0, nil end
  if math_type(status) == "float" and status == status // 1 then status = status // 1 end
  if math_type(status) ~= "integer" or status < 100 or status > 999 then
    error("a handler must return a status 100-999 first, not " .. tostring(status), 0)
  end
  local kind = 0
  local t = type(body)
  if t == "table" then
    body, kind = encode_json(body), 2
  elseif t == "string" then
    kind = 1
  elseif t == "number" or t == "boolean" then
    body, kind = tostring(body), 1
  elseif body ~= nil then
    error("an answer's body must be a string or a table, not " .. t, 0)
  end
  return status, body, kind, header_list(headers)
end

function M.json(ctx)
  local body = ctx.body
  if body == "" then return nil, "empty body" end
  local ok, v = pcall(decode_json, body)
  if not ok then return nil, "invalid JSON: " .. tostring(v) end
  return v
end

-- What ctx:cached stores: a string as is, a table (or number, boolean) as
-- JSON behind a tag, "not found" as a tag of its own. A string that starts
-- like a tag gets one too, so no value is ever mistaken for another.
local TAG = "\0strata:"
local NEG, JSON, STR = TAG .. "nil", TAG .. "json:", TAG .. "str:"

local function encode(v)
  if v == nil then return NEG end
  if type(v) == "string" then
    if sub(v, 1, #TAG) == TAG then return STR .. v end
    return v
  end
  return JSON .. encode_json(v)
end

-- found, value
local function decode(raw)
  if byte(raw, 1) ~= 0 or sub(raw, 1, #TAG) ~= TAG then return true, raw end
  if raw == NEG then return true, nil end
  if sub(raw, 1, #JSON) == JSON then
    local ok, v = pcall(decode_json, sub(raw, #JSON + 1))
    if ok then return true, v end
    return false
  end
  if sub(raw, 1, #STR) == STR then return true, sub(raw, #STR + 1) end
  return true, raw
end

local function check_cached(key, ttl, loader, opts)
  if type(key) ~= "string" or key == "" then
    error("ctx:cached: the key must be a non-empty string", 3)
  end
  if type(ttl) ~= "number" or ttl <= 0 then
    error("ctx:cached: the ttl must be a positive number of seconds", 3)
  end
  if type(loader) ~= "function" then
    error("ctx:cached: the loader must be a function", 3)
  end
  local neg = 5
  if opts ~= nil then
    if type(opts) ~= "table" then error("ctx:cached: opts must be a table", 3) end
    if opts.negative_ttl ~= nil then
      neg = opts.negative_ttl
      if type(neg) ~= "number" or neg < 0 then
        error("ctx:cached: opts.negative_ttl must be a number of seconds >= 0", 3)
      end
    end
  end
  return neg
end

-- Runs the loader as the key's one flight on this node and stores its
-- result. A loader that fails (an error, or nil plus an error text: the db
-- was unreachable) stores nothing, and the requests waiting on it try
-- again themselves.
local function lead(ctx, key, ttl, neg, loader)
  local ok, res, lerr = pcall(loader)
  if not ok then
    prim.fail(ctx, key)
    error(res, 0)
  end
  if res == nil and lerr ~= nil then
    prim.fail(ctx, key)
    return nil, lerr
  end
  local life = res == nil and neg or ttl
  local eok, raw = pcall(encode, res)
  if not eok then
    prim.fail(ctx, key)
    error("ctx:cached: the loader's value cannot be stored: " .. tostring(raw), 0)
  end
  prim.done(ctx, key, res, life)
  local cache = ctx.cache
  if life > 0 and cache then
    -- jitter (+-10 %): keys cached together do not all expire together
    cache:set(key, raw, life * (0.9 + 0.2 * random()))
  end
  return res
end

function M.cached(ctx, key, ttl, loader, opts)
  local neg = check_cached(key, ttl, loader, opts)
  for _ = 1, 5 do
    local st, v = prim.join(ctx, key)
    if st == "hit" then return v end
    if st == nil then
      local cache = ctx.cache
      local raw = cache and cache:get(key)
      if raw ~= nil then
        local found, val = decode(raw)
        if found then
          prim.count(ctx, true)
          return val
        end
      end
      prim.count(ctx, false)
      local l, lv = prim.lead(ctx, key)
      if l == true then return lead(ctx, key, ttl, neg, loader) end
      if l == "hit" then return lv end
    end
    -- "retry": the flight we waited on failed; try again
  end
  -- flights keep failing: load without one
  return (loader())
end

return M
