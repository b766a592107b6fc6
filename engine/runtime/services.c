/* The registry of service kinds. A new kind adds its extern and one row. */
#include <string.h>

#include "service.h"

extern const struct service_kind cache_service_kind;
extern const struct service_kind db_service_kind;
extern const struct service_kind balancer_service_kind;

static const struct service_kind *const kinds[] = {
    &cache_service_kind,
    &db_service_kind,
    &balancer_service_kind,
};

const struct service_kind *service_kind_find(const char *name)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i]->name, name) == 0)
            return kinds[i];
    return NULL;
}
