/* httpc: the command line's blocking HTTP client (strata status / reload
 * talk to admin endpoints). It is a thin wrapper over the HTTP layer's
 * client (engine/http/http_client): one call on a private event loop, run
 * until the answer, so responses are read and framed exactly as a node
 * reads them. Never used inside a node's event loop. */
#ifndef STRATA_HTTPC_H
#define STRATA_HTTPC_H

#include <stddef.h>

#include "buf.h"

/* Sends one request and reads the whole response (body bounded to 8 MiB),
 * all within timeout_s. `headers` are extra request header lines, each
 * ending in CRLF (or NULL); the answer's header fields go to `resp_headers`
 * (when not NULL) as "name: value\n" lines. Returns the status code with the body appended to
 * `resp_body`, or -1 with "ADDR: reason" in err (connection refused,
 * timeout, malformed response). */
int httpc_request(const char *method, const char *addr, const char *path, const char *headers,
                  const char *body, size_t body_len, double timeout_s, struct buf *resp_headers,
                  struct buf *resp_body, char *err, size_t errlen);

#endif
