/* tap.h: a tiny TAP producer for the C unit tests (run under ctest).
 *
 *   ok(cond, "name");  is_int(got, want, "name");  is_str(got, want, "name");
 *   return tap_done();   -- exit status is non-zero when any check failed */
#ifndef STRATA_TAP_H
#define STRATA_TAP_H

#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

#define ok(cond, ...)                                                                   \
    do {                                                                                \
        int ok_c_ = (cond) ? 1 : 0;                                                     \
        tap_n++;                                                                        \
        if (!ok_c_)                                                                     \
            tap_failed++;                                                               \
        printf("%sok %d - ", ok_c_ ? "" : "not ", tap_n);                               \
        printf(__VA_ARGS__);                                                            \
        printf("\n");                                                                   \
        if (!ok_c_)                                                                     \
            printf("#   failed at %s:%d\n", __FILE__, __LINE__);                        \
    } while (0)

#define is_int(got, want, ...)                                                          \
    do {                                                                                \
        long long g_ = (long long)(got), w_ = (long long)(want);                        \
        ok(g_ == w_, __VA_ARGS__);                                                      \
        if (g_ != w_)                                                                   \
            printf("#   got %lld, want %lld\n", g_, w_);                                \
    } while (0)

#define is_str(got, want, ...)                                                          \
    do {                                                                                \
        const char *g_ = (got), *w_ = (want);                                           \
        int e_ = g_ && w_ && strcmp(g_, w_) == 0;                                       \
        ok(e_, __VA_ARGS__);                                                            \
        if (!e_)                                                                        \
            printf("#   got '%s', want '%s'\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)"); \
    } while (0)

static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    if (tap_failed)
        printf("# %d of %d checks failed\n", tap_failed, tap_n);
    return tap_failed ? 1 : 0;
}

#endif
