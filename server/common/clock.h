/*
 * clock.h - the node's clocks in milliseconds (never used by server/raft,
 * which has no clock): monotonic for timeouts and intervals, wall time for
 * what is stored or shown (a record's time, a backup's date).
 */
#ifndef KHO_CLOCK_H
#define KHO_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t clock_ms_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline uint64_t clock_mono_ms(void)
{
    return clock_ms_of(CLOCK_MONOTONIC);
}

static inline uint64_t clock_wall_ms(void)
{
    return clock_ms_of(CLOCK_REALTIME);
}

#endif /* KHO_CLOCK_H */
