#include "log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_INFO;
static char node_name[64] = "strata";
static char log_file[4096];

void log_set_level(enum log_level lvl) { min_level = lvl; }

int log_parse_level(const char *s, enum log_level *out)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    return -1;
}

void log_set_node(const char *name) { snprintf(node_name, sizeof node_name, "%s", name); }

void log_set_file(const char *path) { snprintf(log_file, sizeof log_file, "%s", path ? path : ""); }

int log_reopen(void)
{
    if (!log_file[0])
        return 0;
    int fd = open(log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
    return 0;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    if (lvl < min_level)
        return;
    static const char tag[] = "DIWE";
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    char line[2048];
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03d %c [%s] ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), tag[lvl], node_name);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    fwrite(line, 1, len, stderr);
}

int log_limit_allow(struct log_limit *ll, double now, double interval, unsigned long *suppressed)
{
    if (ll->next > 0 && now < ll->next) {
        ll->suppressed++;
        return 0;
    }
    *suppressed = ll->suppressed;
    ll->suppressed = 0;
    ll->next = now + interval;
    return 1;
}
