/* datadir: directory creation, the lock file, atomic file replacement. */
#include "datadir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int datadir_join(char *out, size_t n, const char *dir, const char *name)
{
    int k = snprintf(out, n, "%s/%s", dir, name);
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

int datadir_tmp_path(char *out, size_t n, const char *dir, const char *name)
{
    int k = snprintf(out, n, "%s/%s.tmp.%ld", dir, name, (long)getpid());
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

static int mkdir_p(const char *path)
{
    char tmp[1024];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof tmp)
        return errno = ENAMETOOLONG, -1;
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (stat(tmp, &st) < 0)
        return -1;
    if (!S_ISDIR(st.st_mode))
        return errno = ENOTDIR, -1;
    return 0;
}

int datadir_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* Removes "*.tmp.*" files: the remains of an atomic write that a crash
 * interrupted before its rename (they were never part of the data). */
static void remove_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strstr(de->d_name, ".tmp.") == NULL)
            continue;
        char p[1300];
        if (datadir_join(p, sizeof p, dir, de->d_name) == 0)
            unlink(p);
    }
    closedir(d);
}

int datadir_open(struct datadir *d, const char *path, char *err, size_t errlen)
{
    d->lock_fd = -1;
    if (snprintf(d->path, sizeof d->path, "%s", path) >= (int)sizeof d->path) {
        snprintf(err, errlen, "data dir path too long");
        return -1;
    }
    if (mkdir_p(path) < 0) {
        snprintf(err, errlen, "cannot create data dir '%s': %s", path, strerror(errno));
        return -1;
    }
    char lp[1100];
    if (datadir_join(lp, sizeof lp, path, "LOCK") < 0) {
        snprintf(err, errlen, "data dir path too long");
        return -1;
    }
    int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open lock file '%s': %s", lp, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\r\n")] = 0;
        close(fd);
        if (e == EWOULDBLOCK)
            snprintf(err, errlen, "data dir '%s' is in use by another process%s%s", path,
                     pid[0] ? " (pid " : "", pid[0] ? pid : "");
        else
            snprintf(err, errlen, "cannot lock '%s': %s", lp, strerror(e));
        if (e == EWOULDBLOCK && pid[0] && strlen(err) + 2 < errlen)
            strcat(err, ")");
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        /* The pid is informational; the lock is what matters. */
    }
    d->lock_fd = fd;
    remove_temps(path);
    return 0;
}

void datadir_close(struct datadir *d)
{
    if (d->lock_fd >= 0) {
        close(d->lock_fd); /* drops the flock */
        d->lock_fd = -1;
    }
}

int datadir_write_atomic(const char *dir, const char *name, const void *p, size_t n, char *err,
                         size_t errlen)
{
    char tmp[1200], dst[1100];
    if (datadir_tmp_path(tmp, sizeof tmp, dir, name) < 0 ||
        datadir_join(dst, sizeof dst, dir, name) < 0) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create '%s': %s", tmp, strerror(errno));
        return -1;
    }
    const char *s = p;
    size_t left = n;
    while (left > 0) {
        ssize_t k = write(fd, s, left);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            snprintf(err, errlen, "write '%s': %s", tmp, k < 0 ? strerror(errno) : "short write");
            goto fail;
        }
        s += k;
        left -= (size_t)k;
    }
    if (fsync(fd) < 0) {
        snprintf(err, errlen, "fsync '%s': %s", tmp, strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, dst) < 0) {
        snprintf(err, errlen, "rename '%s': %s", tmp, strerror(errno));
        goto fail;
    }
    if (datadir_fsync_dir(dir) < 0) {
        snprintf(err, errlen, "fsync dir '%s': %s", dir, strerror(errno));
        return -1;
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return -1;
}
