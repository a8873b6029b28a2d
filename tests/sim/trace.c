/*
 * trace.c - the readable event trace and violation reports.
 *
 * Sweeps run with tracing off: SIM_TRACE() then costs one branch. When a
 * seed fails, sim.c replays it with the ring on (the run is deterministic,
 * so the replay fails at the same event) to show the last lines that led
 * there.
 */
#include "sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void sim_trace_emit(struct sim *s, const char *fmt, ...)
{
    char line[SIM_TRACE_LINE_BYTES];
    int off = snprintf(line, sizeof(line), "%6llu.%02llu ",
                       (unsigned long long)(s->now / SIM_TICK_UNITS),
                       (unsigned long long)(s->now % SIM_TICK_UNITS));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + off, sizeof(line) - (size_t)off, fmt, ap);
    va_end(ap);
    if (s->opts->trace & SIM_TRACE_STREAM) {
        fputs(line, stdout);
        fputc('\n', stdout);
    }
    if ((s->opts->trace & SIM_TRACE_RING) && s->ring != NULL) {
        uint32_t at = (s->ring_head + s->ring_n) % SIM_TRACE_LINES;
        if (s->ring_n == SIM_TRACE_LINES) {
            s->ring_head = (s->ring_head + 1) % SIM_TRACE_LINES;
        } else {
            s->ring_n++;
        }
        memcpy(s->ring[at], line, sizeof(line));
    }
}

void sim_trace_dump(const struct sim *s, FILE *out)
{
    if (s->ring == NULL) {
        return;
    }
    for (uint32_t i = 0; i < s->ring_n; i++) {
        fprintf(out, "  %s\n", s->ring[(s->ring_head + i) % SIM_TRACE_LINES]);
    }
}

/* Records the first violation only: later ones are usually consequences of
 * the first, and the run stops at the next check of sim_failed(). */
void sim_fail(struct sim *s, const char *invariant, const char *fmt, ...)
{
    if (s->fail.failed) {
        return;
    }
    s->fail.failed = true;
    snprintf(s->fail.invariant, sizeof(s->fail.invariant), "%s", invariant);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->fail.detail, sizeof(s->fail.detail), fmt, ap);
    va_end(ap);
    SIM_TRACE(s, "!! violation of %s: %s", s->fail.invariant, s->fail.detail);
}
