/*
 * restore.h - khod --restore FILE: the first start of a node of a NEW
 * cluster from a backup (khoctl backup).
 *
 * Every node of the new cluster restores the same file, so all start with
 * identical groups: the meta group (every node of --peers as its voters)
 * and each registry this node is a replica of (the replicas its meta
 * "reg/" record names as voters), each with the backed-up state machine
 * installed as a snapshot at the backup's index, so that its log continues
 * after it. The old cluster's node records ("node/...") are left out of
 * the meta group: the new meta leader records the new nodes by itself.
 */
#ifndef KHO_NODE_RESTORE_H
#define KHO_NODE_RESTORE_H

#include <stddef.h>

#include "../store/store.h"
#include "node.h"

/*
 * Reads and checks the whole backup file (store_backup_check()) into
 * *info, before anything is created. Errors (a message in err):
 * KHO_ECORRUPT (damaged or truncated), KHO_ENOTFOUND (no such file),
 * KHO_EINVAL, KHO_ETOOLARGE, KHO_EIO, KHO_ENOMEM.
 */
int node_restore_check(const char *path, struct store_backup_info *info,
                       char *err, size_t err_len);

/*
 * Restores the groups of node c from the checked backup into st, which
 * must be empty - or already restored from this same backup, which is a
 * restart: nothing is done (*done false). Every replica a registry names
 * must be a node of c->peers. Errors (a message in err): KHO_ECONFLICT
 * (st holds other data), KHO_EINVAL (a replica outside the new cluster, a
 * malformed registry record), KHO_ENOTFOUND (a registry's group missing
 * from the backup), and store errors.
 */
int node_restore(const char *path, const struct store_backup_info *info,
                 struct store *st, const struct node_config *c, bool *done,
                 char *err, size_t err_len);

#endif /* KHO_NODE_RESTORE_H */
