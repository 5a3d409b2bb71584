/* /metrics, in the Prometheus text exposition format (version 0.0.4), and
 * /healthz. The agent server's counters come from the collector's stats
 * callback; hosts, commands and spool drops from the store. When the store
 * cannot answer, the live counters are still served, with exfleet_store_up
 * at 0, since that is when monitoring needs them most. */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "api_internal.h"
#include "log.h"
#include "status.h"

/* Every series this exposition can hold, with room to spare. */
#define METRICS_MAX (64u << 10)

static const char *const none[] = {NULL};

struct text {
	char *buf;
	size_t len, cap;
	int overflow;
};

static void add(struct text *t, const char *fmt, ...) LOG_PRINTF(2, 3);

static void add(struct text *t, const char *fmt, ...)
{
	if (t->overflow)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= t->cap - t->len)
		t->overflow = 1;
	else
		t->len += (size_t)n;
}

static void family(struct text *t, const char *name, const char *type, const char *help)
{
	add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void value(struct text *t, const char *name, uint64_t v)
{
	add(t, "%s %llu\n", name, (unsigned long long)v);
}

/* One labelled sample; the label's value escaped as the format asks. */
static void labelled(struct text *t, const char *name, const char *label, const char *text,
		     int64_t v)
{
	char escaped[256];
	size_t n = 0;
	for (const char *p = text; *p && n + 2 < sizeof(escaped); p++) {
		if (*p == '\\' || *p == '"' || *p == '\n') {
			escaped[n++] = '\\';
			escaped[n++] = *p == '\n' ? 'n' : *p;
		} else {
			escaped[n++] = *p;
		}
	}
	escaped[n] = '\0';
	add(t, "%s{%s=\"%s\"} %lld\n", name, label, escaped, (long long)v);
}

/* A gauge per name in names (0 when counts lacks it), then any other
 * name counts has. */
static void by_label(struct text *t, const char *name, const char *label,
		     const char *const *names, size_t n, json_t *counts)
{
	for (size_t i = 0; i < n; i++)
		labelled(t, name, label, names[i],
			 json_integer_value(json_object_get(counts, names[i])));
	const char *key;
	json_t *v;
	json_object_foreach(counts, key, v) {
		int listed = 0;
		for (size_t i = 0; i < n && !listed; i++)
			listed = strcmp(key, names[i]) == 0;
		if (!listed)
			labelled(t, name, label, key, json_integer_value(v));
	}
}

static void live(struct text *t, const struct api_stats *s)
{
	family(t, "exfleet_agent_sessions", "gauge",
	       "Agent connections by state: waiting for a handshake slot, in the TLS "
	       "handshake, verified and waiting for Hello, welcomed.");
	labelled(t, "exfleet_agent_sessions", "state", "waiting", (int64_t)s->sessions_waiting);
	labelled(t, "exfleet_agent_sessions", "state", "handshake", (int64_t)s->sessions_handshake);
	labelled(t, "exfleet_agent_sessions", "state", "hello", (int64_t)s->sessions_hello);
	labelled(t, "exfleet_agent_sessions", "state", "ready", (int64_t)s->sessions_ready);
	family(t, "exfleet_agent_handshakes_in_progress", "gauge",
	       "TLS handshakes with agents in progress.");
	value(t, "exfleet_agent_handshakes_in_progress", s->handshakes_in_progress);
	family(t, "exfleet_agent_handshakes_completed_total", "counter",
	       "TLS handshakes with agents completed since the collector started.");
	value(t, "exfleet_agent_handshakes_completed_total", s->handshakes_completed);
	family(t, "exfleet_records_stored_total", "counter",
	       "Agent messages (hellos, snapshots, event batches, results, heartbeats) committed "
	       "to the store.");
	value(t, "exfleet_records_stored_total", s->records_stored);
	family(t, "exfleet_acks_sent_total", "counter",
	       "Acknowledgements sent to agents for records the store committed.");
	value(t, "exfleet_acks_sent_total", s->acks_sent);
	family(t, "exfleet_store_queue_depth", "gauge",
	       "Agent messages waiting for the store's writer.");
	value(t, "exfleet_store_queue_depth", s->store_queue_depth);
	family(t, "exfleet_backpressure_pauses_total", "counter",
	       "Times agent sessions stopped reading because the store was behind.");
	value(t, "exfleet_backpressure_pauses_total", s->backpressure_pauses);
	family(t, "exfleet_connections_shed_total", "counter",
	       "Agent connections and sessions turned away under load.");
	value(t, "exfleet_connections_shed_total", s->shed);
	family(t, "exfleet_accept_emfile_total", "counter",
	       "Agent connections that could not be accepted for want of file descriptors.");
	value(t, "exfleet_accept_emfile_total", s->emfile);
}

/* The process, as Prometheus's own clients name it: what sessions cost in
 * memory and CPU, and how near the open-file ceiling the collector is. A
 * figure that cannot be read is left out. */
static void process(struct text *t)
{
	long page = sysconf(_SC_PAGESIZE);
	unsigned long long size, resident;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f && page > 0 && fscanf(f, "%llu %llu", &size, &resident) == 2) {
		family(t, "process_resident_memory_bytes", "gauge", "Resident memory in bytes.");
		value(t, "process_resident_memory_bytes", resident * (unsigned long long)page);
	}
	if (f)
		fclose(f);
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		family(t, "process_cpu_seconds_total", "counter",
		       "User and system CPU time spent, in seconds.");
		add(t, "process_cpu_seconds_total %.3f\n",
		    (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
			    (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	}
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		uint64_t n = 0;
		for (struct dirent *e; (e = readdir(d));)
			n += e->d_name[0] != '.';
		closedir(d);
		family(t, "process_open_fds", "gauge", "Open file descriptors.");
		value(t, "process_open_fds", n > 0 ? n - 1 : 0); /* less the one reading */
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		family(t, "process_max_fds", "gauge", "The open-file limit (soft).");
		value(t, "process_max_fds", (uint64_t)rl.rlim_cur);
	}
}

static void stored(struct text *t, json_t *counts)
{
	family(t, "exfleet_agent_spool_dropped_records", "gauge",
	       "Records agents report having dropped from full spools (the sum of each host's "
	       "latest report).");
	value(t, "exfleet_agent_spool_dropped_records",
	      (uint64_t)json_integer_value(json_object_get(counts, "spool_dropped")));

	const char *statuses[HOST_REPAIRING + 1];
	for (int s = HOST_HEALTHY; s <= HOST_REPAIRING; s++)
		statuses[s] = host_status_name((enum host_status)s);
	family(t, "exfleet_hosts", "gauge", "Hosts by status (hosts never seen have none).");
	by_label(t, "exfleet_hosts", "status", statuses, HOST_REPAIRING + 1,
		 json_object_get(counts, "hosts_by_status"));

	const char *connectivity[CONN_NEVER_SEEN + 1];
	for (int c = CONN_ONLINE; c <= CONN_NEVER_SEEN; c++)
		connectivity[c] = connectivity_name((enum connectivity)c);
	family(t, "exfleet_hosts_by_connectivity", "gauge",
	       "Hosts by connectivity, including planned hosts never seen.");
	by_label(t, "exfleet_hosts_by_connectivity", "connectivity", connectivity,
		 CONN_NEVER_SEEN + 1, json_object_get(counts, "hosts_by_connectivity"));

	static const char *const states[] = {"queued",   "delivered", "succeeded",
					     "failed",   "rejected",  "expired"};
	family(t, "exfleet_commands", "gauge", "Commands by state.");
	by_label(t, "exfleet_commands", "state", states, sizeof(states) / sizeof(states[0]),
		 json_object_get(counts, "commands_by_state"));
}

int api_get_metrics(struct api_request *r)
{
	if (api_params_only(r, none) < 0)
		return 0;
	const struct api_config *cfg = api_cfg(r->api);
	struct api_stats s = {0};
	if (cfg->stats)
		cfg->stats(&s, cfg->arg);

	struct store_clock clock;
	char err[512];
	json_t *counts;
	if (api_counts(r->api, &clock, &counts, err, sizeof(err)) < 0)
		log_warn("api: metrics: store: %s", err);

	struct text t = {malloc(METRICS_MAX), 0, METRICS_MAX, 0};
	if (!t.buf) {
		json_decref(counts);
		return api_error(r, 500, "internal", "out of memory");
	}
	t.buf[0] = '\0';
	live(&t, &s);
	process(&t);
	family(&t, "exfleet_store_up", "gauge", "1 when the store answered this scrape.");
	value(&t, "exfleet_store_up", counts != NULL);
	if (counts)
		stored(&t, counts);
	json_decref(counts);
	if (t.overflow) {
		free(t.buf);
		return api_error(r, 500, "internal", "the metrics outgrew their buffer");
	}
	api_send_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", t.buf, t.len);
	free(t.buf);
	return 0;
}

int api_get_healthz(struct api_request *r)
{
	if (api_params_only(r, none) < 0)
		return 0;
	struct store_query *q = api_store(r->api);
	char err[512];
	int rc = store_query_begin(q, err, sizeof(err));
	if (rc == 0)
		rc = store_query_ping(q, err, sizeof(err));
	store_query_end(q);
	if (rc < 0) {
		/* Anyone may ask, so the detail goes to the log only. */
		log_warn("api: healthz: store: %s", err);
		return api_error(r, 503, "store_unavailable",
				 "the store cannot be read; the collector's log says why");
	}
	return api_send_json(r, 200, json_pack("{s:s, s:s}", "status", "ok", "store", "ok"));
}
