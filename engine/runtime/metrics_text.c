/* metrics_text: regroups a Prometheus text page by family. See
 * metrics_text.h. */
#include "metrics_text.h"

#include <stdlib.h>
#include <string.h>

struct family {
    const char *name; /* points into the input */
    size_t len;
    struct buf help, type, samples;
};

struct families {
    struct family *f;
    int n, cap;
};

static struct family *fam_find(struct families *fs, const char *name, size_t len)
{
    for (int i = 0; i < fs->n; i++)
        if (fs->f[i].len == len && memcmp(fs->f[i].name, name, len) == 0)
            return &fs->f[i];
    return NULL;
}

static struct family *fam_get(struct families *fs, const char *name, size_t len)
{
    struct family *f = fam_find(fs, name, len);
    if (f)
        return f;
    if (fs->n == fs->cap) {
        int cap = fs->cap ? fs->cap * 2 : 32;
        struct family *nf = realloc(fs->f, (size_t)cap * sizeof *nf);
        if (!nf)
            return NULL;
        fs->f = nf;
        fs->cap = cap;
    }
    f = &fs->f[fs->n++];
    memset(f, 0, sizeof *f);
    f->name = name;
    f->len = len;
    buf_init(&f->help);
    buf_init(&f->type);
    buf_init(&f->samples);
    return f;
}

static size_t name_len(const char *p, const char *end)
{
    const char *s = p;
    while (p < end && *p != '{' && *p != ' ' && *p != '\t')
        p++;
    return (size_t)(p - s);
}

/* The family a sample named name[0..len) belongs to. */
static struct family *sample_family(struct families *fs, const char *name, size_t len)
{
    static const char *const sfx[] = {"_sum", "_count", "_bucket"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        size_t sl = strlen(sfx[i]);
        if (len > sl && memcmp(name + len - sl, sfx[i], sl) == 0) {
            struct family *f = fam_find(fs, name, len - sl);
            if (f)
                return f;
        }
    }
    return fam_get(fs, name, len);
}

int metrics_text_group(const char *in, size_t n, struct buf *out)
{
    struct families fs = {0};
    const char *p = in, *end = in + n;
    int rc = 0;
    while (p < end && rc == 0) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        size_t linelen = (size_t)(next - p);
        if (linelen <= 1) {
            p = next;
            continue;
        }
        if (*p == '#') {
            int help = linelen > 7 && memcmp(p, "# HELP ", 7) == 0;
            int type = linelen > 7 && memcmp(p, "# TYPE ", 7) == 0;
            if (help || type) {
                const char *nm = p + 7;
                struct family *f = fam_get(&fs, nm, name_len(nm, next));
                struct buf *b = f ? (help ? &f->help : &f->type) : NULL;
                if (!f)
                    rc = -1;
                else if (buf_size(b) == 0)
                    rc = buf_append(b, p, linelen);
            }
        } else {
            struct family *f = sample_family(&fs, p, name_len(p, next));
            rc = f ? buf_append(&f->samples, p, linelen) : -1;
        }
        p = next;
    }
    for (int i = 0; i < fs.n; i++) {
        struct family *f = &fs.f[i];
        struct buf *parts[] = {&f->help, &f->type, &f->samples};
        for (int k = 0; k < 3; k++) {
            if (rc == 0 && buf_size(parts[k]) > 0) {
                rc = buf_append(out, buf_head(parts[k]), buf_size(parts[k]));
                const char *last = buf_head(parts[k]) + buf_size(parts[k]) - 1;
                if (rc == 0 && *last != '\n')
                    rc = buf_append(out, "\n", 1);
            }
            buf_free(parts[k]);
        }
    }
    free(fs.f);
    return rc;
}
