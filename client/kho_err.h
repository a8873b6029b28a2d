/*
 * kho_err.h - the one error enum shared by the server, libkho and khoctl.
 *
 * Every fallible kho function returns an `enum kho_err`. The X-macro below is
 * the single source of truth for the codes, their names and their messages,
 * so the enum and the string table can never drift apart.
 */
#ifndef KHO_ERR_H
#define KHO_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the public symbols of libkho (built with -fvisibility=hidden). */
#ifndef KHO_EXPORT
#define KHO_EXPORT __attribute__((visibility("default")))
#endif

/* X(name, value, message) */
#define KHO_ERR_TABLE(X)                                                       \
    X(KHO_OK, 0, "success")                                                    \
    X(KHO_ENOTFOUND, 1, "not found")                                           \
    X(KHO_ECONFLICT, 2, "precondition failed")                                 \
    X(KHO_ENOTLEADER, 3, "not the leader")                                     \
    X(KHO_EUNAVAILABLE, 4, "unavailable: no quorum")                           \
    X(KHO_ETIMEOUT, 5, "timed out: outcome unknown")                           \
    X(KHO_EDENIED, 6, "permission denied")                                     \
    X(KHO_EINVAL, 7, "invalid argument")                                       \
    X(KHO_ETOOLARGE, 8, "too large")                                           \
    X(KHO_ENOSPC, 9, "no space left")                                          \
    X(KHO_ECORRUPT, 10, "data corrupted")                                      \
    X(KHO_EBUSY, 11, "busy: retry later")                                      \
    X(KHO_ENOMEM, 12, "out of memory")                                         \
    X(KHO_EIO, 13, "input/output error")                                       \
    X(KHO_ESTALE, 14, "stale: superseded by a newer term or configuration")  \
    X(KHO_EEXIST, 15, "already exists")

enum kho_err {
#define KHO_ERR_ENUM_(name, value, msg) name = (value),
    KHO_ERR_TABLE(KHO_ERR_ENUM_)
#undef KHO_ERR_ENUM_
};

/* Returns a static, human-readable message for `err`; never NULL. */
KHO_EXPORT const char *kho_strerror(int err);

/* Returns the symbolic name of `err` ("KHO_ENOTFOUND"); never NULL. */
KHO_EXPORT const char *kho_errname(int err);

#ifdef __cplusplus
}
#endif

#endif /* KHO_ERR_H */
