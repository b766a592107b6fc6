/* access_log: the balancer's access log, one line per request: time,
 * client, method, target, status, bytes sent, backend, durations. Two
 * formats: "combined" (the common Apache/nginx shape, with the backend and
 * the durations appended) and "json" (one object per line).
 *
 * Lines are gathered in a buffer and written once per loop iteration (an
 * ev_prepare), so a busy balancer makes one write for many requests and an
 * idle one writes each line at once. SIGUSR1 reopens the file (logrotate
 * renames it, then signals): the log watches the signal itself, so no
 * other layer needs to know it exists.
 *
 * A request's fields are recorded as it goes (access_rec_*): the request
 * line and headers when its head is parsed (the parser's scratch message is
 * reused by the next one), the status when the response head arrives, the
 * bytes as they are written. */
#ifndef STRATA_ACCESS_LOG_H
#define STRATA_ACCESS_LOG_H

#include <ev.h>
#include <lua.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "http_parse.h"

enum access_log_format { ACCESS_LOG_OFF = 0, ACCESS_LOG_COMBINED, ACCESS_LOG_JSON };

struct access_log_cfg {
    int format;          /* enum access_log_format */
    char path[PATH_MAX]; /* a file, or "stderr" */
};

/* One request's fields, kept in its client connection. */
struct access_rec {
    struct buf raw;      /* method, target, referer, user agent, back to back */
    uint32_t method_len, target_len, referer_len, ua_len;
    int minor;           /* HTTP/1.minor */
    int status;
    uint64_t bytes;      /* response bytes written to the client, head included */
    double t_start;      /* the request head was parsed */
    double t_head;       /* the response head arrived (0: none) */
};

struct access_log;

/* Reads `access_log = { path = "...", format = "json" | "combined" }` from
 * the table at idx (absent: off; format defaults to combined). A relative
 * path is taken as given (the topology resolves it). 0, or -1 with a
 * message. */
int access_log_read_cfg(lua_State *L, int idx, struct access_log_cfg *cfg, char *err,
                        size_t errlen);

/* Opens the log (NULL when cfg->format is OFF: nothing to do). On failure
 * NULL with a message in err and *failed set. */
struct access_log *access_log_open(struct ev_loop *loop, const struct access_log_cfg *cfg,
                                   int *failed, char *err, size_t errlen);
/* Writes what is pending and closes. */
void access_log_free(struct access_log *al);
/* 1 when both configurations are the same. */
int access_log_cfg_same(const struct access_log_cfg *a, const struct access_log_cfg *b);

/* A request head was parsed (m NULL: it was bad, nothing is known of it). */
void access_rec_begin(struct access_rec *r, const struct http_msg *m, double now);
/* The response head arrived with this status. */
static inline void access_rec_head(struct access_rec *r, int status, double now)
{
    r->status = status;
    r->t_head = now;
}
void access_rec_free(struct access_rec *r);

/* Appends the line of a finished request. `status` overrides the recorded
 * one when not 0 (an error the balancer answered itself); `backend` may be
 * NULL ("-"). */
void access_log_request(struct access_log *al, const struct access_rec *r, const char *client,
                        const char *backend, int status, double now);

#endif
