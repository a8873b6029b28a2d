/*
 * member.c - membership and leadership (see internal.h). Not yet.
 */
#include "internal.h"

bool api_member_serve(struct worker *w)
{
    (void)w;
    return false;
}

bool api_member_answered(struct worker *w)
{
    (void)w;
    return false;
}
