/*
 * sim.c - khosim's command line: sweep seeds, replay one, trace it.
 *
 *   khosim --seeds N [--start S]     seeds S..S+N-1
 *   khosim --seconds T [--start S]   seeds from S until T wall seconds pass
 *   khosim --seed S [--trace]        replay one seed (with its event trace)
 *   khosim ... --planted-bug N       make the core misbehave (planted build)
 *
 * A violation prints one line "VIOLATION seed=S invariant=NAME detail" on
 * stdout, the last trace lines on stderr (from a deterministic replay of
 * the seed), and exits 1. Bad arguments exit 2. The wall clock is read only
 * for progress lines and --seconds; it never influences a run.
 */
#include "sim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROGRESS_EVERY_S 2.0

struct cli {
    bool have_seed, have_seeds, have_seconds;
    uint64_t seed, seeds, start;
    double seconds;
    bool trace, params;
    int planted_bug;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: khosim --seeds N [--start S]    sweep seeds S..S+N-1 "
                 "(S defaults to 1)\n"
                 "       khosim --seconds T [--start S]  sweep until T wall "
                 "seconds have passed\n"
                 "       khosim --seed S [--trace]       replay one seed, "
                 "optionally printing every event\n"
                 "options:\n"
                 "       --params            print each seed's parameters\n"
                 "       --planted-bug N     plant core bug N (builds with "
                 "-DKHO_PLANTED_BUGS only):\n"
                 "                           1 commit old-term entries by "
                 "counting (Figure 8),\n"
                 "                           2 vote not persisted, 3 ReadIndex "
                 "without quorum,\n"
                 "                           4 truncate the log on a matching "
                 "append\n"
                 "       --help\n"
                 "exit status: 0 all seeds passed, 1 a violation (printed as "
                 "\"VIOLATION seed=S invariant=...\"), 2 bad arguments\n");
}

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
        return false;
    }
    *out = v;
    return true;
}

static bool need_value(int argc, char **argv, int i)
{
    if (i + 1 >= argc) {
        fprintf(stderr, "khosim: %s needs a value\n", argv[i]);
        return false;
    }
    return true;
}

static bool takes_value(const char *a)
{
    static const char *const with_value[] = {"--seed", "--seeds", "--start",
                                             "--seconds", "--planted-bug"};
    for (size_t i = 0; i < sizeof(with_value) / sizeof(with_value[0]); i++) {
        if (strcmp(a, with_value[i]) == 0) {
            return true;
        }
    }
    return false;
}

static int parse_flag(struct cli *c, const char *a)
{
    if (strcmp(a, "--trace") == 0) {
        c->trace = true;
    } else if (strcmp(a, "--params") == 0) {
        c->params = true;
    } else {
        fprintf(stderr, "khosim: unknown argument: %s\n", a);
        return 2;
    }
    return 0;
}

static int parse_option(struct cli *c, const char *a, uint64_t v)
{
    if (strcmp(a, "--seed") == 0) {
        c->have_seed = true;
        c->seed = v;
    } else if (strcmp(a, "--seeds") == 0) {
        c->have_seeds = true;
        c->seeds = v;
    } else if (strcmp(a, "--start") == 0) {
        c->start = v;
    } else if (strcmp(a, "--seconds") == 0) {
        c->have_seconds = true;
        c->seconds = (double)v;
    } else if (v >= RAFT_BUG_COUNT_) {
        fprintf(stderr, "khosim: no planted bug %llu\n", (unsigned long long)v);
        return 2;
    } else {
        c->planted_bug = (int)v;
    }
    return 0;
}

/* Returns 0 to run, 1 for --help, 2 for bad arguments. */
static int parse_args(int argc, char **argv, struct cli *c)
{
    memset(c, 0, sizeof(*c));
    c->start = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        uint64_t v = 0;
        int rc = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            return 1;
        } else if (!takes_value(a)) {
            rc = parse_flag(c, a);
        } else if (!need_value(argc, argv, i)) {
            rc = 2;
        } else if (!parse_u64(argv[++i], &v)) {
            fprintf(stderr, "khosim: %s: not a number: %s\n", a, argv[i]);
            rc = 2;
        } else {
            rc = parse_option(c, a, v);
        }
        if (rc != 0) {
            return rc;
        }
    }
    int modes = c->have_seed + c->have_seeds + c->have_seconds;
    if (modes != 1) {
        fprintf(stderr, "khosim: give exactly one of --seed, --seeds, "
                        "--seconds\n");
        return 2;
    }
    if (c->trace && !c->have_seed) {
        fprintf(stderr, "khosim: --trace replays one seed: use --seed\n");
        return 2;
    }
    return 0;
}

static int set_planted_bug(int bug)
{
#ifdef KHO_PLANTED_BUGS
    raft_planted_bug = bug;
    return 0;
#else
    if (bug != 0) {
        fprintf(stderr, "khosim: --planted-bug needs a build with "
                        "-DKHO_PLANTED_BUGS (build/planted/bin/khosim)\n");
        return 2;
    }
    return 0;
#endif
}

static void print_summary(const struct sim_stats *st, double elapsed_s)
{
    printf(
        "sim: %llu seeds ok, %llu ticks, %llu writes, %llu reads, "
        "%llu elections, %llu crashes (%llu mid-write), %llu partitions, "
        "%llu conf changes, %llu transfers, %llu compactions, "
        "%llu snapshots installed, %llu msgs (%llu dropped), "
        "%llu quiesces (%llu quiet node-ticks, %llu woken by peer-down), "
        "%.1f s\n",
        (unsigned long long)st->seeds, (unsigned long long)st->ticks,
        (unsigned long long)st->writes_acked,
        (unsigned long long)st->reads_done, (unsigned long long)st->elections,
        (unsigned long long)st->crashes, (unsigned long long)st->crashes_mid,
        (unsigned long long)st->partitions,
        (unsigned long long)st->conf_changes, (unsigned long long)st->transfers,
        (unsigned long long)st->compactions,
        (unsigned long long)st->snapshots_installed,
        (unsigned long long)st->msgs_sent, (unsigned long long)st->msgs_dropped,
        (unsigned long long)st->quiesces, (unsigned long long)st->quiet_ticks,
        (unsigned long long)st->down_wakes, elapsed_s);
}

/* Reports a failed seed; replays it with the trace ring on so the lines
 * leading to the violation go to stderr. */
static void report(uint64_t seed, const struct sim_failure *f,
                   const struct cli *c, bool replay)
{
    printf("VIOLATION seed=%llu invariant=%s %s\n", (unsigned long long)seed,
           f->invariant, f->detail);
    fflush(stdout);
    if (replay) {
        struct sim_opts o = {.trace = SIM_TRACE_RING,
                             .planted_bug = c->planted_bug};
        struct sim_stats st = {0};
        struct sim_failure f2;
        sim_run_seed(seed, &o, &st, &f2);
    }
    if (c->planted_bug != 0) {
        fprintf(stderr, "replay: khosim --seed %llu --planted-bug %d --trace\n",
                (unsigned long long)seed, c->planted_bug);
    } else {
        fprintf(stderr, "replay: khosim --seed %llu --trace\n",
                (unsigned long long)seed);
    }
}

/* The core's panic hook: an internal assertion failed (a core bug). The
 * core aborts after this returns, so report it here, as a violation, with
 * the trace that led to it: replaying the seed with the trace ring on
 * panics again at the same point, and that second call prints the ring. */
void sim_core_panic(void *ctx, const char *what, uint64_t group_id, raft_id id,
                    uint64_t term, uint64_t index)
{
    struct sim *s = ctx;
    (void)group_id;
    if (!(s->opts->trace & SIM_TRACE_RING)) {
        printf("VIOLATION seed=%llu invariant=core-panic n%llu term %llu "
               "index %llu: %s\n",
               (unsigned long long)s->seed, (unsigned long long)id,
               (unsigned long long)term, (unsigned long long)index, what);
        fflush(stdout);
    }
    if (s->opts->trace & SIM_TRACE_RING) {
        fprintf(stderr, "last trace lines of seed %llu:\n",
                (unsigned long long)s->seed);
        sim_trace_dump(s, stderr);
    } else if (!(s->opts->trace & SIM_TRACE_STREAM)) {
        struct sim_opts o = {.trace = SIM_TRACE_RING,
                             .planted_bug = s->opts->planted_bug};
        struct sim_stats st = {0};
        struct sim_failure f;
        sim_run_seed(s->seed, &o, &st, &f);
    }
    fprintf(stderr, "replay: khosim --seed %llu --trace%s\n",
            (unsigned long long)s->seed,
            s->opts->planted_bug ? " --planted-bug N" : "");
    exit(1);
}

static void print_params(uint64_t seed)
{
    struct sim_rng rng;
    struct sim_params p;
    sim_rng_seed(&rng, seed ^ UINT64_C(0x5eed5eed5eed5eed));
    sim_params_pick(&rng, &p);
    sim_params_pick_quiesce(seed, &p);
    sim_print_params(&p, seed);
}

static int run_one(const struct cli *c)
{
    struct sim_opts o = {.trace = c->trace ? SIM_TRACE_STREAM : SIM_TRACE_OFF,
                         .planted_bug = c->planted_bug};
    if (c->params) {
        print_params(c->seed);
    }
    struct sim_stats st = {0};
    struct sim_failure f;
    double t0 = wall_s();
    if (sim_run_seed(c->seed, &o, &st, &f) != 0) {
        report(c->seed, &f, c, !c->trace);
        return 1;
    }
    print_summary(&st, wall_s() - t0);
    return 0;
}

static int sweep(const struct cli *c)
{
    struct sim_opts o = {.trace = SIM_TRACE_OFF, .planted_bug = c->planted_bug};
    struct sim_stats st = {0};
    double t0 = wall_s(), last = t0;
    for (uint64_t i = 0;; i++) {
        if (c->have_seeds && i >= c->seeds) {
            break;
        }
        double now = wall_s();
        if (c->have_seconds && now - t0 >= c->seconds) {
            break;
        }
        if (now - last >= PROGRESS_EVERY_S) {
            printf("sim: %llu seeds done (at seed %llu), %.0f s\n",
                   (unsigned long long)i, (unsigned long long)(c->start + i),
                   now - t0);
            fflush(stdout);
            last = now;
        }
        uint64_t seed = c->start + i;
        if (c->params) {
            print_params(seed);
        }
        struct sim_failure f;
        if (sim_run_seed(seed, &o, &st, &f) != 0) {
            report(seed, &f, c, true);
            return 1;
        }
    }
    print_summary(&st, wall_s() - t0);
    return 0;
}

int main(int argc, char **argv)
{
    struct cli c;
    int rc = parse_args(argc, argv, &c);
    if (rc == 1) {
        usage(stdout);
        return 0;
    }
    if (rc != 0) {
        usage(stderr);
        return 2;
    }
    if (set_planted_bug(c.planted_bug) != 0) {
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    return c.have_seed ? run_one(&c) : sweep(&c);
}
