/*
 * admin.c - consistency checks and backups (see internal.h). Not yet.
 */
#include "internal.h"

bool api_admin_serve(struct worker *w)
{
    (void)w;
    return false;
}

bool api_admin_answered(struct worker *w)
{
    (void)w;
    return false;
}
