/* epoch: a db node's durable election state and the history of its log.
 *
 * Failover (failover.h) numbers the reigns of primaries: each promotion
 * starts a new epoch, one higher than any the electing majority has seen.
 * Every node keeps, in the small file EPOCH of its data directory:
 *
 *   - `epoch`: the highest epoch it has seen (by following a primary, by
 *     voting, by being promoted). A node never follows a primary of an
 *     older epoch and never grants two votes in one epoch;
 *   - `voted_for`: whom it voted for in that epoch;
 *   - the history of its log: which epoch wrote which range of offsets,
 *     as (epoch, first offset) pairs. Two logs that share an epoch of
 *     their histories hold the same records up to where the earlier of
 *     the two leaves that epoch, since one primary wrote them all.
 *
 * The history plays the part of a second replication id: the replication
 * id is the data set's (it is written in every log segment and snapshot
 * header, persist.h) and stays across promotions, while a replica that
 * followed an old primary presents the epoch its log ends in; the new
 * primary finds where that epoch ends in its own history and continues
 * the replica from its offset when it is not past that point (a partial
 * resync across a promotion), or names the point where the two logs part
 * (the replica then discards what it has beyond it).
 *
 * The file is replaced atomically and fsynced (datadir_write_atomic)
 * before the state it records takes effect: a vote is answered, a
 * promotion accepts writes, a replica applies a new primary's records
 * only after it. A directory without the file is at epoch 0 with one
 * history entry (0, 0). */
#ifndef STRATA_EPOCH_H
#define STRATA_EPOCH_H

#include <stddef.h>
#include <stdint.h>

#define EPOCH_FILE "EPOCH"
#define EPOCH_HISTORY 16

struct epoch_span {
    uint64_t epoch;
    uint64_t start;      /* the first log offset this epoch wrote */
};

struct epoch_state {
    uint64_t epoch;                  /* the highest seen */
    char voted_for[64];              /* in `epoch`; "" for none */
    struct epoch_span hist[EPOCH_HISTORY];
    int nhist;                       /* at least 1 */
};

/* A fresh state: epoch 0, history (0, 0). */
void epoch_init(struct epoch_state *e);
/* Reads dir/EPOCH (a missing file is a fresh state). 0, or -1 with err
 * when the file is damaged. */
int epoch_load(struct epoch_state *e, const char *dir, char *err, size_t errlen);
/* Writes dir/EPOCH atomically and durably. 0, or -1 with err. */
int epoch_save(const struct epoch_state *e, const char *dir, char *err, size_t errlen);

/* The epoch the log ends in (its history's last). */
static inline uint64_t epoch_log(const struct epoch_state *e) { return e->hist[e->nhist - 1].epoch; }
/* The log from `start` on is written under `epoch` (a promotion). The
 * oldest entry is dropped when the history is full. */
void epoch_begin(struct epoch_state *e, uint64_t epoch, uint64_t start);
/* Where epoch `ep` ends in this history: 0 with *end (UINT64_MAX when it
 * is the history's last), -1 when the history does not have it. */
int epoch_end_of(const struct epoch_state *e, uint64_t ep, uint64_t *end);

/* The history as text, "E:S,E:S,..." (for the handshake line), and back
 * (0, or -1 when it does not parse). */
void epoch_hist_format(const struct epoch_state *e, char *out, size_t n);
int epoch_hist_parse(struct epoch_state *e, const char *s);

/* Compares two logs' positions: by the epoch they end in, then offset.
 * <0, 0, >0 as (ea, oa) is behind, level with, ahead of (eb, ob). */
int epoch_cmp_pos(uint64_t ea, uint64_t oa, uint64_t eb, uint64_t ob);

#endif
