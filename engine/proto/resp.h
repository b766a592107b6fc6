/* resp: the RESP2 request parser and reply writers.
 *
 * resp_parse reads one command from the front of a client's read buffer:
 * a multibulk array ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") or an inline line
 * ("GET k\r\n", with "…" and '…' quoting). Arguments point into the buffer
 * (no copy, no allocation per command); inline escapes are decoded in place.
 * Partial input is remembered, so a command that arrives in many reads is
 * not re-parsed from its start each time. The parser allocates nothing for
 * a declared length; it reports it (p->want) so that the reader can take a
 * large argument into one block sized once, instead of growing its buffer
 * by doubling and copying what arrived at every step.
 *
 * Returns the bytes the command used (argc may be 0 for an empty line or
 * "*0"), -2 when more input is needed, -1 on bad input with the error text
 * (as Redis words it, without the leading '-') in p->err. */
#ifndef STRATA_RESP_H
#define STRATA_RESP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

struct resp_limits {
    size_t max_bulk;     /* longest argument (Redis proto-max-bulk-len: 512 MB) */
    size_t max_args;     /* most arguments per command (1M) */
    size_t max_inline;   /* longest inline line / length header (64 KB) */
};

#define RESP_DEFAULT_LIMITS { 512u * 1024 * 1024, 1024 * 1024, 64 * 1024 }

struct resp_parser {
    /* Progress through a multibulk command that is not complete yet. */
    int in_multibulk;
    long long nargs;
    size_t pos;
    /* The command's arguments; valid after a return > 0 until the buffer
     * is consumed. */
    size_t argc;
    const char **argv;
    size_t *argl;
    size_t cap;
    /* After a -2 inside a bulk whose length header has arrived: the bytes
     * (from the start of the buffer) that complete that bulk, so the caller
     * can make room for them in one step; 0 otherwise. */
    size_t want;
    /* With want: where that bulk's data starts (from the start of the
     * buffer), so a reader may place it at a chosen offset of its block. */
    size_t want_at;
    char err[128];
};

void resp_parser_init(struct resp_parser *p);
void resp_parser_free(struct resp_parser *p);
/* Forget a partial command and give back a large argument array. */
void resp_parser_reset(struct resp_parser *p);
ssize_t resp_parse(struct resp_parser *p, char *buf, size_t len, const struct resp_limits *lim);

/* ---- replies ------------------------------------------------------------- */
void resp_ok(struct buf *b);
void resp_simple(struct buf *b, const char *s);             /* +s\r\n */
void resp_error(struct buf *b, const char *s);              /* -s\r\n */
void resp_errorf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void resp_int(struct buf *b, long long v);
void resp_bulk(struct buf *b, const void *p, size_t n);
void resp_bulk_str(struct buf *b, const char *s);
void resp_null(struct buf *b);                              /* $-1 */
void resp_null_array(struct buf *b);                        /* *-1 */
void resp_array(struct buf *b, size_t n);
/* Formats v in decimal; returns the length (buf of 21+ bytes). */
size_t resp_fmt_i64(char *out, long long v);

#endif
