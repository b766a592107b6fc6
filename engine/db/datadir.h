/* datadir: the db's data directory — created on demand, locked so that two
 * processes never open it at once, and the primitive for replacing a file
 * atomically.
 *
 * The lock is an flock on "LOCK" inside the directory, held for the life of
 * the process. flock (not a pid file) because the kernel drops it when the
 * process dies, kill -9 included, so a crash never leaves a stale lock that
 * a human must clean up; the pid written into the file is for people only.
 *
 * Atomic replacement is the usual sequence: write "NAME.tmp.PID", fsync it,
 * rename over NAME, fsync the directory (without that last step the rename
 * itself may not survive a power cut). */
#ifndef STRATA_DATADIR_H
#define STRATA_DATADIR_H

#include <stddef.h>

struct datadir {
    char path[1024];
    int lock_fd;
};

/* Creates the directory (and parents) if missing, takes the lock and removes
 * temporary files left by an interrupted write. 0, or -1 with err (another
 * process holds the lock: the message names its pid). */
int datadir_open(struct datadir *d, const char *path, char *err, size_t errlen);
/* Releases the lock. */
void datadir_close(struct datadir *d);

/* dir + "/" + name into out; -1 when it does not fit. */
int datadir_join(char *out, size_t n, const char *dir, const char *name);
/* fsyncs a directory so that creates, renames and unlinks in it are durable.
 * 0, or -1 with errno set. */
int datadir_fsync_dir(const char *dir);
/* Replaces dir/name with the bytes given, atomically and durably. */
int datadir_write_atomic(const char *dir, const char *name, const void *p, size_t n, char *err,
                         size_t errlen);
/* The temporary name used for dir/name by this process. */
int datadir_tmp_path(char *out, size_t n, const char *dir, const char *name);

#endif
