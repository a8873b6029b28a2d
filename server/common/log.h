/*
 * log.h - khod's log: one line per event on stderr, with a UTC timestamp,
 * a level and the node's name. Thread-safe (one fprintf per line).
 */
#ifndef KHO_LOG_H
#define KHO_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Sets the threshold and the name printed on each line (copied). */
void log_setup(enum log_level level, const char *node_name);
/* Parses "error", "warn", "info" or "debug"; -1 if none of them. */
int log_level_parse(const char *s);
int log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define LOGE(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define LOGW(...) log_msg(LOG_WARN, __VA_ARGS__)
#define LOGI(...) log_msg(LOG_INFO, __VA_ARGS__)
#define LOGD(...)                                                              \
    do {                                                                       \
        if (log_enabled(LOG_DEBUG)) {                                          \
            log_msg(LOG_DEBUG, __VA_ARGS__);                                   \
        }                                                                      \
    } while (0)

#endif /* KHO_LOG_H */
