/* The registry of service kinds, and the one check that a service config
 * can run. A new kind adds its extern and one row. */
#include <stdio.h>
#include <string.h>

#include "service.h"

extern const struct service_kind cache_service_kind;
extern const struct service_kind db_service_kind;
extern const struct service_kind balancer_service_kind;
extern const struct service_kind web_service_kind;

static const struct service_kind *const kinds[] = {
    &cache_service_kind,
    &db_service_kind,
    &balancer_service_kind,
    &web_service_kind,
};

const struct service_kind *service_kind_find(const char *name)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i]->name, name) == 0)
            return kinds[i];
    return NULL;
}

int service_validate(lua_State *L, int cfg_idx, char *err, size_t errlen)
{
    char kind_name[32], where[1024], why[768] = "";
    cfg_idx = lua_absindex(L, cfg_idx);
    /* kind and where are the DSL's own fields: always strings. */
    if (cfg_string(L, cfg_idx, "where", "?", where, sizeof where, why, sizeof why) < 0 ||
        cfg_string(L, cfg_idx, "kind", "", kind_name, sizeof kind_name, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: %s", where, why);
        return -1;
    }
    const struct service_kind *kind = service_kind_find(kind_name);
    if (!kind) {
        snprintf(err, errlen, "%s: the %s service is not built yet", where, kind_name);
        return -1;
    }
    if (kind->validate && kind->validate(L, cfg_idx, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: %s", where, why);
        return -1;
    }
    return 0;
}
