/* fsync_gate: an LD_PRELOAD shim for tests that need a sync to take as
 * long as they say. While the file $FSYNC_GATE_DIR/closed exists, an
 * fdatasync called from any thread but the process's main one (the db's
 * fsync thread, never its loop) waits; it appends a byte to
 * $FSYNC_GATE_DIR/entered when it starts waiting and to .../left when it
 * goes on, so a test counts syncs in progress instead of timing them. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void mark(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, "x", 1) != 1)
            _exit(99);
        close(fd);
    }
}

int fdatasync(int fd)
{
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    const char *dir = getenv("FSYNC_GATE_DIR");
    if (dir && syscall(SYS_gettid) != getpid()) {
        char gate[4096];
        snprintf(gate, sizeof gate, "%s/closed", dir);
        if (access(gate, F_OK) == 0) {
            mark(dir, "entered");
            struct timespec ms = {0, 1000000};
            while (access(gate, F_OK) == 0)
                nanosleep(&ms, NULL);
            mark(dir, "left");
        }
    }
    return real(fd);
}
