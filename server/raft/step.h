/*
 * step.h - functions shared between the core's files (roles, replication,
 * reads, ready batches). Private to server/raft.
 */
#ifndef KHO_RAFT_STEP_H
#define KHO_RAFT_STEP_H

#include "internal.h"

/* raft.c */
int conf_pos(const struct raft *r, raft_id id);
bool raft_promotable(const struct raft *r);
void become_follower(struct raft *r, uint64_t term, raft_id lead);
void become_leader(struct raft *r);
void campaign(struct raft *r, bool pre, bool transfer);
bool tally_won(const struct raft *r);
void campaign_won(struct raft *r);
void restart_election_timer(struct raft *r);

/* replication.c */
bool msg_validate(struct raft *r, const struct raft_msg *m);
struct raft_msg *msg_new(struct raft *r, uint32_t type, raft_id to);
void msg_free(struct raft_msg *m);
void progress_reset_all(struct raft *r);
int leader_append(struct raft *r, const struct raft_entry *e);
void leader_self_ack(struct raft *r);
void bcast_append(struct raft *r);
void step_leader(struct raft *r, const struct raft_msg *m);
void tick_leader(struct raft *r);
void handle_append(struct raft *r, const struct raft_msg *m);
void handle_heartbeat(struct raft *r, const struct raft_msg *m);
void handle_snapshot(struct raft *r, const struct raft_msg *m);
void apply_conf_entry(struct raft *r, const struct raft_entry *e);
void set_err(struct raft *r, int err);
enum quorum_of { QUORUM_MATCH, QUORUM_READ_ACK };
uint64_t quorum_value(const struct raft *r, enum quorum_of what);

/* read.c */
void reads_fail_all(struct raft *r);
void reads_flush(struct raft *r);
void reads_on_ack(struct raft *r);
bool reads_need_flush(const struct raft *r);
void heartbeat_round(struct raft *r, bool quiesce);

/* quiesce.c */
void pr_heard(const struct raft *r, struct progress *pr);
bool leader_maybe_quiesce(struct raft *r);
void leader_wake(struct raft *r, bool heartbeat);
void leader_wake_on(struct raft *r, const struct raft_msg *m);
void follower_wake_on(struct raft *r, const struct raft_msg *m);
bool follower_quiesce(struct raft *r, const struct raft_msg *m);

/* ready.c */
int alloc_buffers(struct raft *r);
void ready_release(struct raft *r);
void snapshot_free(struct raft_snapshot *s);

#endif
