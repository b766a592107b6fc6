/* web_static: files of one folder served the way a CDN in front expects.
 *
 * GET and HEAD only. The file goes out with sendfile (http_resp_sendfile),
 * with Content-Type from its extension, ETag (size and mtime) and
 * Last-Modified; If-None-Match / If-Modified-Since answer 304; a single
 * Range answers 206 (or 416 when unsatisfiable; several ranges get the
 * whole file); Cache-Control carries max-age, and `immutable` with a year's
 * max-age for fingerprinted names (a hex hash of 8+ digits in the name:
 * app.3f9a1c2e.js). With `precompressed`, a `.br` or `.gz` sibling is sent
 * to a client that accepts it, with Content-Encoding and
 * Vary: Accept-Encoding. Nothing outside the folder is ever served: the
 * path is decoded once, `..` and encoded dots are refused, and symlinks
 * leading out of the folder are not followed (openat2 with RESOLVE_BENEATH,
 * or a check of the path the descriptor opened where that is missing).
 * docs/static.md lists the headers. */
#ifndef STRATA_WEB_STATIC_H
#define STRATA_WEB_STATIC_H

#include <stddef.h>

struct http_req;
struct web_static;

struct web_static_cfg {
    const char *root;       /* the folder (absolute) */
    const char *prefix;     /* URL prefix served from it ("/" by default) */
    const char *index;      /* file for a directory ("index.html"; NULL: none) */
    long max_age;           /* Cache-Control max-age for ordinary names (seconds, default 300) */
    long immutable_max_age; /* for fingerprinted names (default 31536000) */
    int precompressed;      /* look for .br / .gz siblings (default on) */
    int no_openat2;         /* use the fallback check even where openat2 works (tests) */
};

void web_static_cfg_defaults(struct web_static_cfg *cfg);
struct web_static *web_static_new(const struct web_static_cfg *cfg, char *err, size_t errlen);
void web_static_free(struct web_static *st);

/* 1: the request was for this folder and has been answered (finished);
 * 0: not under the prefix, or no such file, and the method is GET/HEAD
 * (the caller may route it on, or answer 404). A path that tries to leave
 * the folder is answered 404 (and counted) without touching the file. */
int web_static_serve(struct web_static *st, struct http_req *req);

/* served: file answers (200 and 206, GET and HEAD); not_modified: 304;
 * partial: 206; refused: paths that tried to leave the folder or hide in
 * it (answered 404). */
struct web_static_stats {
    unsigned long served, not_modified, partial, refused;
};
void web_static_stats(const struct web_static *st, struct web_static_stats *out);
/* 1 when files are opened with openat2 and RESOLVE_BENEATH, 0 when the
 * kernel lacks it and the opened path is checked instead. */
int web_static_beneath(const struct web_static *st);

#endif
