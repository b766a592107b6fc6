#include "httpc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

#define HTTPC_MAX_RESPONSE (8 * 1024 * 1024)

/* Waits for fd to be ready for `events` until the deadline (monotonic us). */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = (deadline - util_mono_us()) / 1000;
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, (int)left);
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR)
            return -1;
    }
}

int httpc_request(const char *method, const char *addr, const char *path, const char *body,
                  size_t body_len, double timeout_s, struct buf *resp_body, char *err,
                  size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (util_parse_addr(addr, &ss, &sl, err, errlen) < 0)
        return -1;
    int64_t deadline = util_mono_us() + (int64_t)(timeout_s * 1e6);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int rc = -1;
    struct buf out, in;
    buf_init(&out);
    buf_init(&in);
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "%s: %s", addr, strerror(errno));
        goto done;
    }
    if (wait_fd(fd, POLLOUT, deadline) < 0) {
        snprintf(err, errlen, "%s: connect timed out", addr);
        goto done;
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
    if (soerr) {
        snprintf(err, errlen, "%s: %s", addr, strerror(soerr));
        goto done;
    }
    buf_printf(&out, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
               method, path, addr, body_len);
    if (body_len)
        buf_append(&out, body, body_len);
    while (buf_size(&out) > 0) {
        ssize_t n = write(fd, buf_head(&out), buf_size(&out));
        if (n > 0) {
            buf_consume(&out, (size_t)n);
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, deadline) < 0) {
                snprintf(err, errlen, "%s: write timed out", addr);
                goto done;
            }
        } else {
            snprintf(err, errlen, "%s: %s", addr, strerror(errno));
            goto done;
        }
    }
    for (;;) {
        if (buf_reserve(&in, 16384) < 0)
            goto done;
        ssize_t n = read(fd, buf_tail(&in), buf_room(&in));
        if (n > 0) {
            buf_commit(&in, (size_t)n);
            if (buf_size(&in) > HTTPC_MAX_RESPONSE) {
                snprintf(err, errlen, "%s: response too large", addr);
                goto done;
            }
        } else if (n == 0) {
            break;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (wait_fd(fd, POLLIN, deadline) < 0) {
                snprintf(err, errlen, "%s: response timed out", addr);
                goto done;
            }
        } else {
            snprintf(err, errlen, "%s: %s", addr, strerror(errno));
            goto done;
        }
    }
    /* Status line, then the body after the blank line (admin endpoints send
     * Content-Length and close, so the rest of the stream is the body). */
    buf_append(&in, "", 1);
    const char *p = buf_head(&in);
    int status;
    if (sscanf(p, "HTTP/1.%*d %d", &status) != 1) {
        snprintf(err, errlen, "%s: not an HTTP response", addr);
        goto done;
    }
    const char *sep = strstr(p, "\r\n\r\n");
    if (!sep) {
        snprintf(err, errlen, "%s: truncated HTTP response", addr);
        goto done;
    }
    sep += 4;
    buf_append(resp_body, sep, buf_size(&in) - 1 - (size_t)(sep - p));
    rc = status;
done:
    close(fd);
    buf_free(&out);
    buf_free(&in);
    return rc;
}
