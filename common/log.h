/* Logging: one line per message, with time, level and, for session lines,
 * the peer it concerns. Never pass a secret to these functions. */
#ifndef EXFLEET_LOG_H
#define EXFLEET_LOG_H

#include <stdarg.h>
#include <stdio.h>

enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Where lines go (default stderr) and the most verbose level written. */
void log_init(FILE *out, enum log_level max_level);
void log_set_level(enum log_level max_level);
enum log_level log_get_level(void);
/* "error", "warn", "info", "debug"; -1 when the name is unknown. */
int log_level_parse(const char *name);
/* Prefix placed after the level on every line, e.g. the program name. */
void log_set_prefix(const char *prefix);

#if defined(__MINGW32__)
/* The Windows build uses MinGW's C99 printf (__USE_MINGW_ANSI_STDIO), which
 * takes %zu and %lld; plain "printf" would check against msvcrt's. */
#define LOG_PRINTF(a, b) __attribute__((format(gnu_printf, a, b)))
#elif defined(__GNUC__)
#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LOG_PRINTF(a, b)
#endif

void log_msg(enum log_level level, const char *peer, const char *fmt, ...) LOG_PRINTF(3, 4);
void log_vmsg(enum log_level level, const char *peer, const char *fmt, va_list ap);

#define log_err(...) log_msg(LOG_ERR, NULL, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, NULL, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, NULL, __VA_ARGS__)

/* Prints "PROG: message" to stderr and exits 1. For start-up only. */
void fatal(const char *fmt, ...) LOG_PRINTF(1, 2);

#endif
