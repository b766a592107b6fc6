/* libFuzzer driver: the RESP parser must never read out of bounds, loop, or
 * accept a command whose arguments do not lie inside the input, and it must
 * parse the same commands whether the input arrives at once or in pieces
 * (a client's bytes reach the server in reads of any size).
 *
 * The first byte of the input seeds the piece sizes; the rest is the
 * stream. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resp.h"

#define MAX_CMDS 256

struct outcome {
    size_t ncmds;
    uint64_t digest[MAX_CMDS]; /* a hash of each command's arguments */
    int error;                 /* the stream ended in bad input */
    char err[128];
};

static uint64_t digest_cmd(const struct resp_parser *p)
{
    uint64_t h = 1469598103934665603ull ^ p->argc;
    for (size_t i = 0; i < p->argc; i++) {
        h = (h ^ p->argl[i]) * 1099511628211ull;
        for (size_t j = 0; j < p->argl[i]; j++)
            h = (h ^ (unsigned char)p->argv[i][j]) * 1099511628211ull;
    }
    return h;
}

/* Feeds data[0..size) in pieces whose sizes follow `seed` (0: all at once),
 * as a server does: the unconsumed rest stays at the front of the buffer. */
static void run(const uint8_t *data, size_t size, unsigned seed, struct outcome *o)
{
    const struct resp_limits lim = {1024 * 1024, 1024, 4096};
    char *buf = malloc(size + 1);
    if (!buf)
        abort();
    struct resp_parser p;
    resp_parser_init(&p);
    memset(o, 0, sizeof *o);
    size_t avail = 0, off = 0;
    while (o->ncmds < MAX_CMDS) {
        ssize_t n = resp_parse(&p, buf + off, avail - off, &lim);
        if (n == -1) {
            o->error = 1;
            memcpy(o->err, p.err, sizeof o->err);
            break;
        }
        if (n == -2 || (n == 0 && avail == off)) {
            if (avail == size)
                break;
            size_t piece = seed ? 1 + (seed = seed * 1103515245u + 12345u) % 17 : size;
            if (piece > size - avail)
                piece = size - avail;
            memcpy(buf + avail, data + avail, piece);
            avail += piece;
            continue;
        }
        if (n <= 0 || (size_t)n > avail - off)
            abort();
        for (size_t i = 0; i < p.argc; i++)
            if (p.argv[i] < buf + off || p.argv[i] + p.argl[i] > buf + off + (size_t)n)
                abort();
        o->digest[o->ncmds++] = digest_cmd(&p);
        off += (size_t)n;
    }
    resp_parser_free(&p);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned seed = data[0] | 1u;
    data++;
    size--;
    static struct outcome whole, pieces;
    run(data, size, 0, &whole);
    run(data, size, seed, &pieces);
    if (whole.ncmds != pieces.ncmds || whole.error != pieces.error ||
        memcmp(whole.digest, pieces.digest, whole.ncmds * sizeof whole.digest[0]) != 0 ||
        (whole.error && strcmp(whole.err, pieces.err) != 0))
        abort();
    return 0;
}
