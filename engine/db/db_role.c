/* db_role: the ROLE command (db_role.h). */
#include "db_role.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resp.h"

static void split_hostport(const char *addr, char *host, size_t hn, const char **port)
{
    const char *colon = strrchr(addr, ':');
    size_t len = colon ? (size_t)(colon - addr) : strlen(addr);
    if (len >= 2 && addr[0] == '[' && addr[len - 1] == ']') {
        addr++;
        len -= 2;
    }
    if (len >= hn)
        len = hn - 1;
    memcpy(host, addr, len);
    host[len] = 0;
    *port = colon ? colon + 1 : "0";
}

static const char *replica_state(const struct repl_replica *rr)
{
    if (repl_replica_busy(rr))
        return "sync";
    switch (rr->state) {
    case REPL_R_IDLE:
        return "connect";
    case REPL_R_CONNECTING:
    case REPL_R_HANDSHAKE:
        return "connecting";
    case REPL_R_STREAM:
        return "connected";
    default:
        return "sync";
    }
}

void db_role_reply(struct buf *out, const struct repl_primary *rp, const struct repl_replica *rr,
                   uint64_t offset)
{
    char host[64];
    const char *port;
    if (rr) {
        split_hostport(rr->upstream, host, sizeof host, &port);
        resp_array(out, 5);
        resp_bulk_str(out, "slave");
        resp_bulk_str(out, host);
        resp_int(out, atoi(port));
        resp_bulk_str(out, replica_state(rr));
        /* The served data's offset: none yet while a new copy loads. */
        resp_int(out, repl_replica_busy(rr) ? 0 : (long long)offset);
        return;
    }
    resp_array(out, 3);
    resp_bulk_str(out, "master");
    resp_int(out, (long long)offset);
    int n = 0;
    if (rp)
        for (const struct repl_link *l = rp->links; l; l = l->next)
            n += !l->follower;
    resp_array(out, (size_t)n);
    if (!rp)
        return;
    for (const struct repl_link *l = rp->links; l; l = l->next) {
        if (l->follower)
            continue;
        char acked[24];
        split_hostport(l->listen, host, sizeof host, &port);
        snprintf(acked, sizeof acked, "%llu", (unsigned long long)l->acked);
        resp_array(out, 3);
        resp_bulk_str(out, host);
        resp_bulk_str(out, port);
        resp_bulk_str(out, acked);
    }
}
