-- A small user/profile API, the application every stage example runs.
--
-- Reads go through the cache (cache-aside with ctx:cached: one loader call
-- per node for concurrent misses, "not found" cached briefly); writes go to
-- the database primary and delete the cached copy, so the next read loads
-- the new value. Where the cache also follows the database's change stream
-- (invalidate_from), a write made by anyone else -- redis-cli against the
-- primary, another application -- clears the cache too.
--
--   curl -s -X PUT localhost:8080/api/users/1 -d '{"name":"alice","city":"Oslo"}'
--   curl -s localhost:8080/api/users/1              # from the db, then from the cache
--   curl -s -X POST localhost:8080/api/users/1/visits
--   curl -s localhost:8080/api/users/1/profile      # user and visit count, fetched together
--   curl -s -X DELETE localhost:8080/api/users/1
local app = strata.app()

local USER_TTL = 60 -- seconds a user stays cached

local function user_key(id) return "user:" .. id end
local function visits_key(id) return "visits:" .. id end

-- Ids are short decimal numbers: anything else never reaches the data tier.
local function valid_id(id) return id:match("^%d+$") ~= nil and #id <= 12 end

local function load_user(ctx, id)
  return ctx:cached(user_key(id), USER_TTL, function()
    local raw, err = ctx.db:get(user_key(id))
    if err then error("db: " .. err) end
    return raw and json.decode(raw) -- nil: not found (cached briefly too)
  end)
end

app:get("/hello", function(ctx)
  return 200, "hello\n"
end)

app:get("/api/users/:id", function(ctx)
  local id = ctx.params.id
  if not valid_id(id) then return 400, { error = "bad id" } end
  local user = load_user(ctx, id)
  if not user then return 404, { error = "no such user" } end
  return 200, user
end)

app:put("/api/users/:id", function(ctx)
  local id = ctx.params.id
  if not valid_id(id) then return 400, { error = "bad id" } end
  local body, why = ctx:json()
  if type(body) ~= "table" or type(body.name) ~= "string" then
    return 400, { error = why or "a JSON object with a name is needed" }
  end
  local user = { id = tonumber(id), name = body.name, city = body.city }
  local ok, err = ctx.db:set(user_key(id), json.encode(user))
  if not ok then return 503, { error = err } end
  ctx.cache:del(user_key(id))
  return 200, user
end)

app:delete("/api/users/:id", function(ctx)
  local id = ctx.params.id
  if not valid_id(id) then return 400, { error = "bad id" } end
  local n, err = ctx.db:del(user_key(id), visits_key(id))
  if not n then return 503, { error = err } end
  ctx.cache:del(user_key(id))
  return n > 0 and 204 or 404
end)

app:post("/api/users/:id/visits", function(ctx)
  local id = ctx.params.id
  if not valid_id(id) then return 400, { error = "bad id" } end
  local n, err = ctx.db:incr(visits_key(id))
  if not n then return 503, { error = err } end
  return 200, { visits = n }
end)

-- Two reads at once: the user (through the cache) and the visit count
-- (from the database, or a replica that has this session's writes).
app:get("/api/users/:id/profile", function(ctx)
  local id = ctx.params.id
  if not valid_id(id) then return 400, { error = "bad id" } end
  local user, visits = ctx:all(
    function() return load_user(ctx, id) end,
    function() return ctx.db:get(visits_key(id)) end)
  if not user then return 404, { error = "no such user" } end
  return 200, { user = user, visits = tonumber(visits) or 0 }
end)

return app
