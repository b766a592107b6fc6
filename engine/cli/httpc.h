/* httpc: a tiny blocking HTTP/1.1 client for the command line (strata
 * status / reload talk to admin endpoints). Never used inside a node's
 * event loop. */
#ifndef STRATA_HTTPC_H
#define STRATA_HTTPC_H

#include <stddef.h>

#include "buf.h"

/* Sends one request with Connection: close and reads the whole response
 * (bounded to 8 MiB). Returns the status code with the body in `body`, or -1
 * with a message in err (connection refused, timeout, bad response). */
int httpc_request(const char *method, const char *addr, const char *path, const char *body,
                  size_t body_len, double timeout_s, struct buf *resp_body, char *err,
                  size_t errlen);

#endif
