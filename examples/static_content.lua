-- Stage 7: static content, ready for a CDN. The web nodes serve the files of
-- public/ with the headers a CDN (or a browser) caches by: ETag and
-- Last-Modified (conditional requests answer 304), Cache-Control (a year
-- and `immutable` for fingerprinted names like app.3f9a1c2e.js), ranges,
-- and precompressed .gz/.br siblings with Vary: Accept-Encoding. Point the
-- CDN's origin at the balancer; docs/web.md lists what it sees.
--
--   strata run examples/static_content.lua
--   curl -si localhost:8080/                             # index.html, ETag, Cache-Control
--   curl -si localhost:8080/app.3f9a1c2e.js | grep -i cache-control   # immutable
--   curl -si -H 'Accept-Encoding: gzip' localhost:8080/style.css   # the .gz sibling
--   curl -si -H 'Range: bytes=0-9' localhost:8080/index.html      # 206
strata.supervisor { admin = "127.0.0.1:9100" }

local db = strata.db {
  primary = { node = "data", listen = "127.0.0.1:7001", dir = "../var/data", fsync = "everysec" },
}
local cache = strata.cache {
  shards = { { node = "data", listen = "127.0.0.1:6001" } },
  invalidate_from = db,
}
local web = strata.web {
  nodes  = { { node = "web1", listen = "127.0.0.1:8081" },
             { node = "web2", listen = "127.0.0.1:8082" } },
  app    = "app.lua",
  static = { root = "public", max_age = 300, precompressed = true },
  cache  = cache,
  db     = db,
}
strata.balancer {
  node     = "lb",
  listen   = "127.0.0.1:8080",
  backends = web,
  health   = { path = "/healthz", interval = "1s" },
}
