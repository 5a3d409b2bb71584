/* Backend registry, and the result helper every backend uses. */
#include "probe.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifdef EXFLEET_PROBE_SIM
extern const struct probe_backend probe_sim_backend;
#endif
#ifdef EXFLEET_PROBE_WIN32
extern const struct probe_backend probe_win32_backend;
#endif

static const struct probe_backend *const backends[] = {
#ifdef EXFLEET_PROBE_SIM
	&probe_sim_backend,
#endif
#ifdef EXFLEET_PROBE_WIN32
	&probe_win32_backend,
#endif
	NULL,
};

const struct probe_backend *probe_backend_find(const char *name)
{
	for (size_t i = 0; backends[i]; i++)
		if (strcmp(backends[i]->name, name) == 0)
			return backends[i];
	return NULL;
}

const char *probe_backend_names(void)
{
	static char names[64];
	if (names[0])
		return names;
	size_t used = 0;
	for (size_t i = 0; backends[i] && used < sizeof(names); i++)
		used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s",
					 i ? ", " : "", backends[i]->name);
	return names;
}

void probe_result_set(struct probe_result *r, uint32_t code, const char *fmt, ...)
{
	r->win32_error = code;
	if (!fmt) {
		snprintf(r->message, sizeof(r->message), "%s", code ? winerr_text(code) : "");
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->message, sizeof(r->message), fmt, ap);
	va_end(ap);
}
