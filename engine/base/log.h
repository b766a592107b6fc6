/* log: leveled log lines on stderr, "time level [node] message".
 *
 * One process hosts one node, so the node name is process-wide state set
 * once at start; everything else is passed explicitly. */
#ifndef STRATA_LOG_H
#define STRATA_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level lvl);
int log_parse_level(const char *s, enum log_level *out);
void log_set_node(const char *name);
/* The file standard output and error go to, when they go to one (a node's
 * file in the supervisor's log_dir): log_reopen opens it again by name and
 * puts it under both, for logrotate (SIGUSR1). 0, or -1 (nothing changes). */
void log_set_file(const char *path);
int log_reopen(void);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A repeated condition (a descriptor shortage, a failing disk) is logged
 * at most once per interval, so it cannot fill a log disk. The caller keeps
 * one struct log_limit per condition, zeroed. */
struct log_limit {
    double next;               /* monotonic seconds: the next line allowed */
    unsigned long suppressed;  /* lines skipped since the last one logged */
};

/* 1 when a line may be logged now (then *suppressed says how many were
 * skipped before it and the count restarts), 0 when it is to be skipped. */
int log_limit_allow(struct log_limit *ll, double now, double interval, unsigned long *suppressed);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
