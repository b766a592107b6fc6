-- Stage: a load balancer in front of two web servers. Clients reach only
-- the balancer; losing one web server is not visible to them: health checks
-- take it out of rotation, and idempotent requests are retried elsewhere.
--
-- Any HTTP servers will do as backends, e.g. in two terminals:
--   python3 -m http.server 8081
--   python3 -m http.server 8082
-- then:
--   strata run examples/balancer.lua
--   curl -s http://127.0.0.1:8080/
strata.supervisor { admin = "127.0.0.1:9100" }

strata.balancer {
  node     = "lb",
  listen   = "127.0.0.1:8080",
  backends = { "127.0.0.1:8081", "127.0.0.1:8082" },
  policy   = "least_conn",            -- or "policies/least_busy.lua": routing in Lua
  health   = { path = "/", interval = "1s", rise = 2, fall = 3 },
}
