#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

static FILE *log_out;
static enum log_level log_max = LOG_INFO;
static char log_prefix[32];

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_init(FILE *out, enum log_level max_level)
{
	log_out = out;
	log_max = max_level;
}

void log_set_level(enum log_level max_level)
{
	log_max = max_level;
}

enum log_level log_get_level(void)
{
	return log_max;
}

int log_level_parse(const char *name)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcmp(name, level_names[i]) == 0)
			return (int)i;
	return -1;
}

void log_set_prefix(const char *prefix)
{
	snprintf(log_prefix, sizeof(log_prefix), "%s", prefix ? prefix : "");
}

void log_vmsg(enum log_level level, const char *peer, const char *fmt, va_list ap)
{
	if (level > log_max)
		return;
	FILE *out = log_out ? log_out : stderr;

	uv_timeval64_t tv;
	uv_gettimeofday(&tv);
	time_t secs = (time_t)tv.tv_sec;
	struct tm tm;
#ifdef _WIN32
	gmtime_s(&tm, &secs);
#else
	gmtime_r(&secs, &tm);
#endif
	char when[32];
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);

	/* One fprintf per line keeps lines whole when several threads log. */
	char text[1024];
	vsnprintf(text, sizeof(text), fmt, ap);
	fprintf(out, "%s.%03dZ %-5s %s%s%s%s%s%s\n", when, (int)(tv.tv_usec / 1000),
		level_names[level], log_prefix, log_prefix[0] ? ": " : "", peer ? "[" : "",
		peer ? peer : "", peer ? "] " : "", text);
	fflush(out);
}

void log_msg(enum log_level level, const char *peer, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, peer, fmt, ap);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (log_prefix[0])
		fprintf(stderr, "%s: ", log_prefix);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}
