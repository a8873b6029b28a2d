/* kho_err.c - message and name tables for enum kho_err. */
#include "kho_err.h"

const char *kho_strerror(int err)
{
    switch (err) {
#define KHO_ERR_MSG_(name, value, msg)                                         \
    case (value):                                                              \
        return (msg);
        KHO_ERR_TABLE(KHO_ERR_MSG_)
#undef KHO_ERR_MSG_
    default:
        return "unknown error";
    }
}

const char *kho_errname(int err)
{
    switch (err) {
#define KHO_ERR_NAME_(name, value, msg)                                        \
    case (value):                                                              \
        return #name;
        KHO_ERR_TABLE(KHO_ERR_NAME_)
#undef KHO_ERR_NAME_
    default:
        return "KHO_E?";
    }
}
