/* exfleet-loadgen: simulates a fleet of agents against a collector on this
 * machine, for integration tests and the benchmark. See tests/load/README.md. */
#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "loadgen.h"
#include "log.h"
#include "util.h"

#define FD_MARGIN 64 /* files a process needs besides its sessions */
#define AGENTS_MAX 1000000
#define PROCS_MAX 64
#define WORKER_GRACE_S 30 /* after the deadline, before a worker is killed */

static const struct scenario {
	const char *name;
	enum lg_scenario id;
	const char *help;
} scenarios[] = {
    {"connect", LG_CONNECT,
     "ramp up to N sessions, hold them --hold s (heartbeats\n"
     "                only). Goal: all N welcomed, all still up after the hold."},
    {"ingest", LG_INGEST,
     "N sessions send --events-per-sec each, in batches of\n"
     "                --batch, for --duration s once all are up. Goal: every\n"
     "                event acknowledged."},
    {"storm", LG_STORM,
     "N idle sessions; says \"armed\" once all are up and\n"
     "                acknowledged, then waits for the harness to restart the\n"
     "                collector. Goal: every session dropped, came back and had\n"
     "                its pending record acknowledged."},
    {"fanout", LG_FANOUT,
     "N sessions; once armed, after --issue-after s (or at\n"
     "                SIGUSR1), a signed RESCAN for every host is queued in the\n"
     "                collector's --store in one transaction. Goal: every result\n"
     "                acknowledged; times from the commands' issued_at."},
    {"promote", LG_PROMOTE,
     "N hosts at risk; once armed, after --issue-after s (or\n"
     "                at SIGUSR1), dcpromo breaks all at once. Goal: the\n"
     "                collector's --api lists every host AFFECTED; times from the\n"
     "                auth-error events' send."},
    {"resume", LG_RESUME,
     "N sessions; once armed, every one is closed and comes\n"
     "                back offering its session ticket, at --rate/--inflight.\n"
     "                Goal: all welcomed again (how many resumed is reported)."},
};

#define NSCENARIOS (sizeof(scenarios) / sizeof(scenarios[0]))

static const char *scenario_name(enum lg_scenario id)
{
	for (size_t i = 0; i < NSCENARIOS; i++)
		if (scenarios[i].id == id)
			return scenarios[i].name;
	return "?";
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: " LG_PROG " --collector 127.0.0.1:PORT --pki DIR --agents N [options]\n"
	        "\n"
	        "Simulates N exfleet agents in this process (or --procs processes), each with its\n"
	        "own certificate minted in memory from the CA in DIR, speaking the real protocol\n"
	        "over mutual TLS 1.3 to a collector on this machine (127.0.0.0/8 only).\n"
	        "\n"
	        "  --collector ADDR:PORT  the collector (an IPv4 address in 127.0.0.0/8)\n"
	        "  --name NAME            name in the collector's certificate (localhost)\n"
	        "  --pki DIR              the CA: DIR/ca.crt and DIR/ca.key (mode 0600)\n"
	        "  --agents N             simulated agents (host ids PREFIX00001, ...)\n"
	        "  --prefix PREFIX        host id prefix (LOAD)\n"
	        "  --scenario NAME        what to do (connect):\n");
	for (size_t i = 0; i < NSCENARIOS; i++)
		fprintf(out, "      %-9s %s\n", scenarios[i].name, scenarios[i].help);
	fprintf(
	    out,
	    "  --procs P              split the agents over P processes, one loop each (1)\n"
	    "  --rate R               new sessions per second during the ramp (0: no limit)\n"
	    "  --inflight H           connection attempts in progress during the ramp (256);\n"
	    "                         reconnects follow each agent's own backoff\n"
	    "  --hold S               connect: seconds to hold all sessions (5)\n"
	    "  --events-per-sec E     ingest: events per second per agent (1)\n"
	    "  --batch B              ingest: events per EventBatch, 1 to %d (10)\n"
	    "  --duration D           ingest: seconds measured once all are up (30)\n"
	    "  --window W             unacknowledged records per agent, at most (8192)\n"
	    "  --deadline S           the whole run stops after S seconds, goal met or not (60)\n"
	    "  --sources K            spread connections over 127.0.0.1..127.0.0.K, 0 to 254;\n"
	    "                         0 leaves the source address to the system (250)\n"
	    "  --reconnect-min MS     first reconnect delay ceiling (1000, as the agent)\n"
	    "  --reconnect-max MS     longest reconnect delay (300000, as the agent)\n"
	    "  --handshake-timeout MS TCP connected to TLS done, at most (30000, as the agent)\n"
	    "  --cert-days N          validity of the minted certificates (1)\n"
	    "  --no-resume            never offer a session ticket: every handshake is full\n"
	    "  --store PATH           fanout: the collector's store (SQLite) to queue commands in\n"
	    "  --issue-after S        fanout, promote: seconds from armed to the commands or the\n"
	    "                         breakage (1); SIGUSR1 does it at once\n"
	    "  --api ADDR:PORT        promote: the collector's HTTPS API (127.0.0.0/8)\n"
	    "  --poll-ms MS           promote: how often the API is listed (100)\n"
	    "  --json FILE            write the report there instead of stdout\n"
	    "  --quiet                no progress lines or summary on stderr\n"
	    "  --log-level LEVEL      session log lines: error, warn, info, debug (error)\n"
	    "  --help                 this text\n"
	    "\n"
	    "Progress goes to stderr once a second; the report, one JSON object, to stdout.\n"
	    "The minted certificates are in no index and cannot be revoked by name: use a\n"
	    "test CA. The open-file limit is raised to its hard limit; agents that do not fit\n"
	    "in one process need --procs.\n"
	    "\n"
	    "Exit status: 0 when the scenario met its goal before the deadline, 1 when it\n"
	    "did not (or could not start), 2 on usage.\n",
	    LG_BATCH_MAX);
}

/* --- arguments ------------------------------------------------------------- */

static int parse_double(const char *opt, const char *s, double min, double max, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "%s: %s: '%s' is not a number from %g to %g\n", LG_PROG, opt, s,
		        min, max);
		return -1;
	}
	*out = v;
	return 0;
}

static int parse_uint(const char *opt, const char *s, unsigned long min, unsigned long max,
                      unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max) {
		fprintf(stderr, "%s: %s: '%s' is not a whole number from %lu to %lu\n", LG_PROG,
		        opt, s, min, max);
		return -1;
	}
	*out = v;
	return 0;
}

/* ADDR:PORT of a collector on this machine, into addr and text. */
static int parse_local(const char *opt, const char *s, struct sockaddr_in *addr, char *text,
                       size_t len)
{
	char host[64], port[8];
	unsigned long p;
	if (strlen(s) >= len || util_split_hostport(s, host, sizeof(host), port, sizeof(port)) < 0 ||
	    uv_ip4_addr(host, 0, addr) < 0) {
		fprintf(stderr, "%s: %s: '%s' is not IPv4-ADDRESS:PORT\n", LG_PROG, opt, s);
		return -1;
	}
	/* A load generator aims at a collector on this machine only. */
	if ((ntohl(addr->sin_addr.s_addr) >> 24) != 127) {
		fprintf(stderr,
		        "%s: %s: %s is not in 127.0.0.0/8; " LG_PROG
		        " loads only a collector on this machine\n",
		        LG_PROG, opt, host);
		return -1;
	}
	if (parse_uint(opt, port, 1, 65535, &p) < 0)
		return -1;
	addr->sin_port = htons((uint16_t)p);
	snprintf(text, len, "%s", s);
	return 0;
}

static int parse_collector(struct lg_options *o, const char *s)
{
	return parse_local("--collector", s, &o->target, o->collector, sizeof(o->collector));
}

enum {
	OPT_COLLECTOR = 256,
	OPT_NAME,
	OPT_PKI,
	OPT_AGENTS,
	OPT_PREFIX,
	OPT_PROCS,
	OPT_SCENARIO,
	OPT_RATE,
	OPT_INFLIGHT,
	OPT_HOLD,
	OPT_EPS,
	OPT_BATCH,
	OPT_DURATION,
	OPT_WINDOW,
	OPT_DEADLINE,
	OPT_SOURCES,
	OPT_RMIN,
	OPT_RMAX,
	OPT_HS_TIMEOUT,
	OPT_CERT_DAYS,
	OPT_NO_RESUME,
	OPT_STORE,
	OPT_ISSUE_AFTER,
	OPT_API,
	OPT_POLL_MS,
	OPT_JSON,
	OPT_QUIET,
	OPT_LOG_LEVEL,
	OPT_HELP,
};

static const struct option long_options[] = {
    {"collector", required_argument, NULL, OPT_COLLECTOR},
    {"name", required_argument, NULL, OPT_NAME},
    {"pki", required_argument, NULL, OPT_PKI},
    {"agents", required_argument, NULL, OPT_AGENTS},
    {"prefix", required_argument, NULL, OPT_PREFIX},
    {"procs", required_argument, NULL, OPT_PROCS},
    {"scenario", required_argument, NULL, OPT_SCENARIO},
    {"rate", required_argument, NULL, OPT_RATE},
    {"inflight", required_argument, NULL, OPT_INFLIGHT},
    {"hold", required_argument, NULL, OPT_HOLD},
    {"events-per-sec", required_argument, NULL, OPT_EPS},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"deadline", required_argument, NULL, OPT_DEADLINE},
    {"sources", required_argument, NULL, OPT_SOURCES},
    {"reconnect-min", required_argument, NULL, OPT_RMIN},
    {"reconnect-max", required_argument, NULL, OPT_RMAX},
    {"handshake-timeout", required_argument, NULL, OPT_HS_TIMEOUT},
    {"cert-days", required_argument, NULL, OPT_CERT_DAYS},
    {"no-resume", no_argument, NULL, OPT_NO_RESUME},
    {"store", required_argument, NULL, OPT_STORE},
    {"issue-after", required_argument, NULL, OPT_ISSUE_AFTER},
    {"api", required_argument, NULL, OPT_API},
    {"poll-ms", required_argument, NULL, OPT_POLL_MS},
    {"json", required_argument, NULL, OPT_JSON},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* 0, 1 for --help, or -1 on a usage error (already reported). */
static int parse_args(int argc, char **argv, struct lg_options *o)
{
	unsigned long u;
	int c;
	memset(o, 0, sizeof(*o));
	o->scenario = LG_CONNECT;
	o->name = "localhost";
	o->prefix = "LOAD";
	o->procs = 1;
	o->inflight = 256;
	o->hold_s = 5;
	o->events_per_sec = 1;
	o->batch = 10;
	o->duration_s = 30;
	o->deadline_s = 60;
	o->sources = 250;
	o->window = 8192;
	o->reconnect_min_ms = 1000;
	o->reconnect_max_ms = 300000;
	o->handshake_timeout_ms = 30000;
	o->cert_days = 1;
	o->issue_after_s = 1;
	o->poll_ms = 100;
	o->log_level = LOG_ERR;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
		const char *opt = argv[optind - 1];
		int rc = 0;
		switch (c) {
		case OPT_COLLECTOR:
			rc = parse_collector(o, optarg);
			break;
		case OPT_NAME:
			o->name = optarg;
			break;
		case OPT_PKI:
			o->pki_dir = optarg;
			break;
		case OPT_AGENTS:
			rc = parse_uint(opt, optarg, 1, AGENTS_MAX, &u);
			o->agents = (unsigned)u;
			break;
		case OPT_PREFIX:
			o->prefix = optarg;
			break;
		case OPT_PROCS:
			rc = parse_uint(opt, optarg, 1, PROCS_MAX, &u);
			o->procs = (unsigned)u;
			break;
		case OPT_SCENARIO:
			rc = -1;
			for (size_t i = 0; i < NSCENARIOS; i++) {
				if (strcmp(optarg, scenarios[i].name) == 0) {
					o->scenario = scenarios[i].id;
					rc = 0;
				}
			}
			if (rc < 0)
				fprintf(stderr,
				        "%s: --scenario: '%s' is not connect, ingest, storm, fanout, "
				        "promote or resume\n",
				        LG_PROG, optarg);
			break;
		case OPT_RATE:
			rc = parse_double(opt, optarg, 0, 1e6, &o->rate);
			break;
		case OPT_INFLIGHT:
			rc = parse_uint(opt, optarg, 1, AGENTS_MAX, &u);
			o->inflight = (unsigned)u;
			break;
		case OPT_HOLD:
			rc = parse_double(opt, optarg, 0, 86400, &o->hold_s);
			break;
		case OPT_EPS:
			rc = parse_double(opt, optarg, 0, 100000, &o->events_per_sec);
			break;
		case OPT_BATCH:
			rc = parse_uint(opt, optarg, 1, LG_BATCH_MAX, &u);
			o->batch = (unsigned)u;
			break;
		case OPT_DURATION:
			rc = parse_double(opt, optarg, 0.1, 86400, &o->duration_s);
			break;
		case OPT_WINDOW:
			rc = parse_uint(opt, optarg, 1, 1u << 30, &u);
			o->window = (unsigned)u;
			break;
		case OPT_DEADLINE:
			rc = parse_double(opt, optarg, 0.1, 86400, &o->deadline_s);
			break;
		case OPT_SOURCES:
			rc = parse_uint(opt, optarg, 0, 254, &u);
			o->sources = (unsigned)u;
			break;
		case OPT_RMIN:
			rc = parse_uint(opt, optarg, 1, 3600000, &u);
			o->reconnect_min_ms = u;
			break;
		case OPT_RMAX:
			rc = parse_uint(opt, optarg, 1, 86400000, &u);
			o->reconnect_max_ms = u;
			break;
		case OPT_HS_TIMEOUT:
			rc = parse_uint(opt, optarg, 100, 600000, &u);
			o->handshake_timeout_ms = u;
			break;
		case OPT_CERT_DAYS:
			rc = parse_uint(opt, optarg, 1, PKI_DAYS_MAX, &u);
			o->cert_days = (int)u;
			break;
		case OPT_NO_RESUME:
			o->no_resume = 1;
			break;
		case OPT_STORE:
			o->store = optarg;
			break;
		case OPT_ISSUE_AFTER:
			rc = parse_double(opt, optarg, 0, 86400, &o->issue_after_s);
			break;
		case OPT_API:
			rc = parse_local(opt, optarg, &o->api_addr, o->api, sizeof(o->api));
			break;
		case OPT_POLL_MS:
			rc = parse_uint(opt, optarg, 1, 60000, &u);
			o->poll_ms = (unsigned)u;
			break;
		case OPT_JSON:
			o->json_path = optarg;
			break;
		case OPT_QUIET:
			o->quiet = 1;
			break;
		case OPT_LOG_LEVEL:
			o->log_level = log_level_parse(optarg);
			if (o->log_level < 0) {
				fprintf(stderr,
				        "%s: --log-level: '%s' is not error, warn, info or debug\n",
				        LG_PROG, optarg);
				rc = -1;
			}
			break;
		case OPT_HELP:
			return 1;
		default:
			fprintf(stderr, "%s: unknown or incomplete option '%s'; see --help\n",
			        LG_PROG, opt);
			return -1;
		}
		if (rc < 0)
			return -1;
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'; see --help\n", LG_PROG,
		        argv[optind]);
		return -1;
	}
	if (!o->collector[0] || !o->pki_dir || !o->agents) {
		fprintf(stderr, "%s: --collector, --pki and --agents are required; see --help\n",
		        LG_PROG);
		return -1;
	}
	char host[PKI_NAME_MAX + 8];
	lg_host_id(o, o->agents - 1, host, sizeof(host));
	if (!pki_name_valid(host)) {
		fprintf(stderr,
		        "%s: --prefix: '%s' makes host ids like '%s', which are not valid "
		        "names (A-Z a-z 0-9 . _ -, at most %d)\n",
		        LG_PROG, o->prefix, host, PKI_NAME_MAX);
		return -1;
	}
	if (o->procs > o->agents) {
		fprintf(stderr, "%s: --procs %u is more than --agents %u\n", LG_PROG, o->procs,
		        o->agents);
		return -1;
	}
	if (o->reconnect_max_ms < o->reconnect_min_ms) {
		fprintf(stderr, "%s: --reconnect-max is below --reconnect-min\n", LG_PROG);
		return -1;
	}
	if (o->scenario == LG_FANOUT && !o->store) {
		fprintf(stderr, "%s: fanout needs --store, the collector's store\n", LG_PROG);
		return -1;
	}
	if (o->scenario == LG_PROMOTE && !o->api[0]) {
		fprintf(stderr, "%s: promote needs --api, the collector's HTTPS API\n", LG_PROG);
		return -1;
	}
	return 0;
}

/* Raises the open-file limit to its hard limit and checks that each process's
 * share of the agents fits. */
static int check_files(const struct lg_options *o)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		fprintf(stderr, "%s: cannot read the open-file limit: %s\n", LG_PROG,
		        strerror(errno));
		return -1;
	}
	rlim_t soft = rl.rlim_cur;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		fprintf(stderr, "%s: cannot raise the open-file limit to %llu: %s\n", LG_PROG,
		        (unsigned long long)rl.rlim_max, strerror(errno));
		rl.rlim_cur = soft;
	}
	if (!o->quiet)
		fprintf(stderr, "%s: open files: soft limit %llu, now %llu; hard limit %llu\n",
		        LG_PROG, (unsigned long long)soft, (unsigned long long)rl.rlim_cur,
		        (unsigned long long)rl.rlim_max);
	unsigned long long per_proc = (o->agents + o->procs - 1) / o->procs;
	if (per_proc + FD_MARGIN > rl.rlim_cur) {
		unsigned long long room = rl.rlim_cur > FD_MARGIN ? rl.rlim_cur - FD_MARGIN : 1;
		unsigned long long need = (o->agents + room - 1) / room;
		fprintf(
		    stderr,
		    "%s: %llu agents per process need %llu open files, above the limit of %llu: "
		    "use --procs %llu or more (or raise the hard limit: ulimit -Hn)\n",
		    LG_PROG, per_proc, per_proc + FD_MARGIN, (unsigned long long)rl.rlim_cur, need);
		return -1;
	}
	return 0;
}

/* --- progress ---------------------------------------------------------------- */

struct printer {
	const struct lg_options *o;
	int64_t start_ns, prev_ns;
	struct lg_progress prev;
};

static void print_progress(struct printer *pr, const struct lg_progress *p)
{
	int64_t now = (int64_t)uv_hrtime();
	double dt = (double)(now - pr->prev_ns) / 1e9;
	if (dt <= 0)
		dt = 1;
	if (!pr->o->quiet) {
		fprintf(stderr,
		        "%s: %6.1f s: %u/%u up, %u connecting, %u waiting to retry; "
		        "%llu handshakes (+%.0f/s), %llu failures or drops",
		        LG_PROG, (double)(now - pr->start_ns) / 1e9, p->ready, p->agents,
		        p->inflight, p->waiting, (unsigned long long)p->tls_ok,
		        (double)(p->tls_ok - pr->prev.tls_ok) / dt,
		        (unsigned long long)p->failures);
		if (pr->o->scenario == LG_INGEST)
			fprintf(stderr, "; events sent %llu, acked %llu (+%.0f/s)",
			        (unsigned long long)p->events_sent,
			        (unsigned long long)p->events_acked,
			        (double)(p->events_acked - pr->prev.events_acked) / dt);
		fputc('\n', stderr);
	}
	pr->prev = *p;
	pr->prev_ns = now;
}

void lg_print_armed(const struct lg_options *o, unsigned agents)
{
	/* Printed even with --quiet: a harness waits for this line. */
	const char *next = o->scenario == LG_STORM    ? "stop and restart the collector now"
	                   : o->scenario == LG_FANOUT ? "commands are queued after --issue-after"
	                   : o->scenario == LG_PROMOTE ? "hosts are promoted after --issue-after"
	                                               : "every session reconnects now";
	fprintf(stderr, "%s: %s: armed: all %u sessions up and acknowledged; %s\n", LG_PROG,
	        scenario_name(o->scenario), agents, next);
}

static void single_progress(void *arg, const struct lg_progress *p)
{
	print_progress(arg, p);
}

static void single_armed(void *arg, unsigned agents)
{
	lg_print_armed(((struct printer *)arg)->o, agents);
}

/* --- the report ---------------------------------------------------------------- */

struct part {
	struct lg_result *res;
	struct lg_slot *slots;
	pid_t pid;
	int status; /* waitpid's, for workers */
	int lost;   /* the worker sent no result */
	char error[256];
};

static double secs(int64_t ns)
{
	return (double)ns / 1e9;
}

static json_t *jhist(const struct lg_hist *h)
{
	if (h->count == 0)
		return json_pack("{s:I,s:n,s:n,s:n,s:n}", "samples", (json_int_t)0, "p50", "p90",
		                 "p99", "max");
	return json_pack("{s:I,s:f,s:f,s:f,s:f}", "samples", (json_int_t)h->count, "p50",
	                 (double)lg_hist_quantile(h, 0.50) / 1000, "p90",
	                 (double)lg_hist_quantile(h, 0.90) / 1000, "p99",
	                 (double)lg_hist_quantile(h, 0.99) / 1000, "max", (double)h->max_us / 1000);
}

static json_t *jtime(int64_t ns, int64_t since)
{
	return ns ? json_real(secs(ns - since)) : json_null();
}

static void merge_reasons(struct lg_result *t, const struct lg_result *r)
{
	t->reason_other += r->reason_other;
	for (int i = 0; i < LG_REASONS && r->reason_count[i]; i++) {
		int j = 0;
		while (j < LG_REASONS && t->reason_count[j] &&
		       strcmp(t->reason[j], r->reason[i]) != 0)
			j++;
		if (j == LG_REASONS) {
			t->reason_other += r->reason_count[i];
			continue;
		}
		if (!t->reason_count[j])
			memcpy(t->reason[j], r->reason[i], LG_REASON_LEN);
		t->reason_count[j] += r->reason_count[i];
	}
}

/* The latest of a time every part must reach; 0 when one did not. */
static int64_t latest(const struct part *parts, unsigned n, size_t offset)
{
	int64_t t = 0;
	for (unsigned k = 0; k < n; k++) {
		int64_t v;
		if (parts[k].lost)
			return 0;
		memcpy(&v, (const char *)parts[k].res + offset, sizeof(v));
		if (v == 0)
			return 0;
		if (v > t)
			t = v;
	}
	return t;
}

/* Sums what adds up over the processes. */
static void merge(struct lg_result *t, const struct part *parts, unsigned n)
{
	memset(t, 0, sizeof(*t));
	t->goal_met = 1;
	t->all_welcomed_ns = latest(parts, n, offsetof(struct lg_result, all_welcomed_ns));
	t->storm_all_dropped_ns =
	    latest(parts, n, offsetof(struct lg_result, storm_all_dropped_ns));
	t->storm_all_welcomed_ns =
	    latest(parts, n, offsetof(struct lg_result, storm_all_welcomed_ns));
	t->storm_recovered_ns = latest(parts, n, offsetof(struct lg_result, storm_recovered_ns));
	t->fanout_done_ms = latest(parts, n, offsetof(struct lg_result, fanout_done_ms));
	t->fanout_committed_ms = latest(parts, n, offsetof(struct lg_result, fanout_committed_ms));
	t->promote_done_ms = latest(parts, n, offsetof(struct lg_result, promote_done_ms));
	t->redial_end_ns = latest(parts, n, offsetof(struct lg_result, redial_end_ns));
	for (unsigned k = 0; k < n; k++) {
		const struct lg_result *r = parts[k].res;
		if (parts[k].lost) {
			t->goal_met = 0;
			continue;
		}
		t->agents += r->agents;
		t->goal_met &= r->goal_met && r->loop_close_rc == 0;
		t->interrupted |= r->interrupted;
		t->loop_close_rc |= r->loop_close_rc;
		t->start_ns = r->start_ns;
		if (r->end_ns > t->end_ns)
			t->end_ns = r->end_ns;
		if (r->mint_ns > t->mint_ns)
			t->mint_ns = r->mint_ns; /* the processes mint side by side */
		if (r->storm_first_drop_ns &&
		    (!t->storm_first_drop_ns || r->storm_first_drop_ns < t->storm_first_drop_ns))
			t->storm_first_drop_ns = r->storm_first_drop_ns;
		/* Each process issues and promotes on its own: the earliest. */
		if (r->fanout_issued_ms &&
		    (!t->fanout_issued_ms || r->fanout_issued_ms < t->fanout_issued_ms))
			t->fanout_issued_ms = r->fanout_issued_ms;
		if (r->promote_ms && (!t->promote_ms || r->promote_ms < t->promote_ms))
			t->promote_ms = r->promote_ms;
		if (r->redial_start_ns &&
		    (!t->redial_start_ns || r->redial_start_ns < t->redial_start_ns))
			t->redial_start_ns = r->redial_start_ns;
		if (r->fanout_sign_us > t->fanout_sign_us)
			t->fanout_sign_us = r->fanout_sign_us;
		if (r->poll_error[0] && !t->poll_error[0])
			memcpy(t->poll_error, r->poll_error, sizeof(t->poll_error));
#define SUM(field) t->field += r->field
		SUM(certs_minted);
		SUM(ramp_tls_ok);
		SUM(attempts);
		SUM(tls_ok);
		SUM(welcomes);
		SUM(drops);
		SUM(max_ready);
		SUM(ready_at_end);
		SUM(ever_welcomed);
		SUM(max_inflight);
		SUM(adopted);
		SUM(events_generated);
		SUM(events_sent);
		SUM(events_resent);
		SUM(events_acked);
		SUM(events_throttled);
		SUM(steady_events_acked);
		SUM(records_acked);
		SUM(unacked_at_end);
		SUM(commands_received);
		SUM(commands_succeeded);
		SUM(commands_rejected);
		SUM(results_acked);
		SUM(storm_attempts);
		SUM(storm_recovered);
		SUM(rss_kb_up);
		SUM(rss_kb_end);
		SUM(hwm_kb);
		SUM(ack_latency_unsampled);
		SUM(tls_resumed);
		SUM(tickets);
		SUM(fanout_queued);
		SUM(fanout_received);
		SUM(fanout_done);
		SUM(promoted);
		SUM(detected);
		SUM(polls);
		SUM(poll_errors);
		SUM(redial_tls_ok);
		SUM(redial_resumed);
#undef SUM
		for (int i = 0; i < LG_FAIL_COUNT; i++)
			t->fail[i] += r->fail[i];
		merge_reasons(t, r);
		lg_hist_merge(&t->welcome_latency, &r->welcome_latency);
		lg_hist_merge(&t->ack_latency, &r->ack_latency);
		lg_hist_merge(&t->command_latency, &r->command_latency);
		lg_hist_merge(&t->fanout_delivery, &r->fanout_delivery);
		lg_hist_merge(&t->fanout_result, &r->fanout_result);
		lg_hist_merge(&t->detect_seen, &r->detect_seen);
		lg_hist_merge(&t->detect_recorded, &r->detect_recorded);
		lg_hist_merge(&t->poll_latency, &r->poll_latency);
	}
}

/* Acknowledged events per second while every process was in its steady
 * window, from the timelines when there are several processes. */
static double steady_rate(const struct part *parts, unsigned n, uint32_t nslots, double *window_s)
{
	int64_t from = 0, to = INT64_MAX;
	*window_s = 0;
	for (unsigned k = 0; k < n; k++) {
		const struct lg_result *r = parts[k].res;
		if (parts[k].lost || !r->steady_start_ns || !r->steady_end_ns)
			return 0;
		if (r->steady_start_ns > from)
			from = r->steady_start_ns;
		if (r->steady_end_ns < to)
			to = r->steady_end_ns;
	}
	if (n == 1) {
		*window_s = secs(to - from);
		return *window_s > 0 ? (double)parts[0].res->steady_events_acked / *window_s : 0;
	}
	int64_t start = parts[0].res->start_ns, slot_ns = LG_SLOT_MS * 1000000ll;
	uint64_t first = (uint64_t)((from - start + slot_ns - 1) / slot_ns);
	uint64_t last = (uint64_t)((to - start) / slot_ns); /* exclusive */
	if (last > nslots)
		last = nslots;
	if (last <= first + 10) {
		/* Windows that hardly overlap: add up each process's own rate. */
		double sum = 0;
		for (unsigned k = 0; k < n; k++) {
			const struct lg_result *r = parts[k].res;
			sum += (double)r->steady_events_acked /
			       secs(r->steady_end_ns - r->steady_start_ns);
		}
		*window_s = secs(to - from);
		return sum;
	}
	uint64_t acked = 0;
	for (unsigned k = 0; k < n; k++)
		for (uint64_t i = first; i < last; i++)
			acked += parts[k].slots[i].events_acked;
	*window_s = (double)(last - first) * LG_SLOT_MS / 1000;
	return (double)acked / *window_s;
}

/* The most connection attempts in progress at once, all processes together,
 * between two times (per LG_SLOT_MS slot, the sum of each process's peak). */
static unsigned peak_attempts(const struct part *parts, unsigned n, uint32_t nslots, int64_t from,
                              int64_t to)
{
	int64_t start = parts[0].res->start_ns, slot_ns = LG_SLOT_MS * 1000000ll;
	uint64_t first = from > start ? (uint64_t)((from - start) / slot_ns) : 0;
	uint64_t last = to > start ? (uint64_t)((to - start) / slot_ns) + 1 : 0;
	unsigned peak = 0;
	if (last > nslots)
		last = nslots;
	for (uint64_t i = first; i < last; i++) {
		unsigned sum = 0;
		for (unsigned k = 0; k < n; k++)
			if (!parts[k].lost)
				sum += parts[k].slots[i].max_inflight;
		if (sum > peak)
			peak = sum;
	}
	return peak;
}

static const char *goal_text(const struct lg_options *o, char *buf, size_t len)
{
	switch (o->scenario) {
	case LG_CONNECT:
		snprintf(buf, len,
		         "all %u agents welcomed, and all up after a %.0f s hold, within %.0f s",
		         o->agents, o->hold_s, o->deadline_s);
		break;
	case LG_INGEST:
		snprintf(buf, len,
		         "all %u agents welcomed, %.0f s of events at %g/s each, every event "
		         "acknowledged, within %.0f s",
		         o->agents, o->duration_s, o->events_per_sec, o->deadline_s);
		break;
	case LG_STORM:
		snprintf(buf, len,
		         "all %u sessions dropped, welcomed again and their pending record "
		         "acknowledged, within %.0f s",
		         o->agents, o->deadline_s);
		break;
	case LG_FANOUT:
		snprintf(buf, len,
		         "all %u agents welcomed, a RESCAN queued for each, every result "
		         "acknowledged, within %.0f s",
		         o->agents, o->deadline_s);
		break;
	case LG_PROMOTE:
		snprintf(buf, len,
		         "all %u hosts welcomed at risk, promoted at once, and each listed "
		         "AFFECTED by the API, within %.0f s",
		         o->agents, o->deadline_s);
		break;
	case LG_RESUME:
		snprintf(buf, len,
		         "all %u agents welcomed, their sessions closed, and all welcomed again "
		         "offering their tickets, within %.0f s",
		         o->agents, o->deadline_s);
		break;
	}
	return buf;
}

static int report(const struct lg_options *o, const struct part *parts, unsigned n, uint32_t nslots,
                  const struct rlimit *rl)
{
	struct lg_result *t = calloc(1, sizeof(*t));
	char goal[256];
	int rc = -1;
	if (!t) {
		fprintf(stderr, "%s: out of memory for the report\n", LG_PROG);
		return -1;
	}
	merge(t, parts, n);
	int64_t s0 = t->start_ns;
	double ramp_s = t->all_welcomed_ns ? secs(t->all_welcomed_ns - s0) : 0;
	double window_s = 0;
	double steady = o->scenario == LG_INGEST ? steady_rate(parts, n, nslots, &window_s) : 0;
	int storm = o->scenario == LG_STORM;
	int64_t storm_end = t->storm_recovered_ns ? t->storm_recovered_ns : t->end_ns;
	unsigned storm_peak =
	    storm && t->storm_first_drop_ns
	        ? peak_attempts(parts, n, nslots, t->storm_first_drop_ns, storm_end)
	        : 0;

	json_t *fails = json_object(), *reasons = json_array(), *procs = json_array();
	for (int i = 0; i < LG_FAIL_COUNT; i++)
		json_object_set_new(fails, lg_fail_names[i], json_integer((json_int_t)t->fail[i]));
	for (int i = 0; i < LG_REASONS && t->reason_count[i]; i++)
		json_array_append_new(reasons, json_pack("{s:s,s:I}", "reason", t->reason[i],
		                                         "count", (json_int_t)t->reason_count[i]));
	for (unsigned k = 0; k < n; k++) {
		const struct lg_result *r = parts[k].res;
		json_t *p = json_pack(
		    "{s:i,s:b,s:I,s:I,s:I,s:b}", "pid", (int)parts[k].pid, "result_received",
		    !parts[k].lost, "agents", (json_int_t)r->agents, "rss_kb_all_up",
		    (json_int_t)r->rss_kb_up, "rss_kb_peak", (json_int_t)r->hwm_kb,
		    "loop_closed_cleanly", !parts[k].lost && r->loop_close_rc == 0);
		if (parts[k].error[0])
			json_object_set_new(p, "error", json_string(parts[k].error));
		json_array_append_new(procs, p);
	}
	json_t *root = json_object();
	json_object_set_new(root, "scenario", json_string(scenario_name(o->scenario)));
	json_object_set_new(root, "goal", json_string(goal_text(o, goal, sizeof(goal))));
	json_object_set_new(root, "goal_met", json_boolean(t->goal_met));
	json_object_set_new(root, "interrupted", json_boolean(t->interrupted));
	json_object_set_new(root, "collector", json_string(o->collector));
	json_object_set_new(
	    root, "options",
	    json_pack("{s:I,s:I,s:I,s:f,s:I,s:f,s:f,s:I,s:f,s:f,s:I,s:I,s:I,s:I}", "agents",
	              (json_int_t)o->agents, "procs", (json_int_t)o->procs, "sources",
	              (json_int_t)o->sources, "rate", o->rate, "inflight", (json_int_t)o->inflight,
	              "hold_s", o->hold_s, "events_per_sec", o->events_per_sec, "batch",
	              (json_int_t)o->batch, "duration_s", o->duration_s, "deadline_s",
	              o->deadline_s, "window", (json_int_t)o->window, "reconnect_min_ms",
	              (json_int_t)o->reconnect_min_ms, "reconnect_max_ms",
	              (json_int_t)o->reconnect_max_ms, "cert_days", (json_int_t)o->cert_days));
	json_object_set_new(json_object_get(root, "options"), "handshake_timeout_ms",
	                    json_integer((json_int_t)o->handshake_timeout_ms));
	json_object_set_new(root, "rlimit_nofile",
	                    json_pack("{s:I,s:I}", "soft", (json_int_t)rl->rlim_cur, "hard",
	                              (json_int_t)rl->rlim_max));
	json_object_set_new(root, "elapsed_s", json_real(t->end_ns ? secs(t->end_ns - s0) : 0));
	json_object_set_new(
	    root, "certificates",
	    json_pack("{s:I,s:f,s:f}", "minted", (json_int_t)t->certs_minted, "seconds",
	              secs((int64_t)t->mint_ns), "per_second",
	              t->mint_ns ? (double)t->certs_minted / secs((int64_t)t->mint_ns) : 0.0));
	json_object_set_new(root, "sessions",
	                    json_pack("{s:I,s:I,s:I,s:I}", "max_up", (json_int_t)t->max_ready,
	                              "up_at_end", (json_int_t)t->ready_at_end, "ever_welcomed",
	                              (json_int_t)t->ever_welcomed, "drops", (json_int_t)t->drops));
	json_object_set_new(root, "time_to_all_welcomed_s", jtime(t->all_welcomed_ns, s0));
	json_object_set_new(
	    root, "handshakes",
	    json_pack("{s:I,s:I,s:I,s:I,s:o,s:I,s:b}", "attempts", (json_int_t)t->attempts,
	              "tls_completed", (json_int_t)t->tls_ok, "resumed", (json_int_t)t->tls_resumed,
	              "welcomes", (json_int_t)t->welcomes, "per_second_ramp",
	              ramp_s > 0 ? json_real((double)t->ramp_tls_ok / ramp_s) : json_null(),
	              "max_in_progress", (json_int_t)peak_attempts(parts, n, nslots, s0, t->end_ns),
	              "resumption_offered", !o->no_resume));
	json_object_set_new(root, "tickets_received", json_integer((json_int_t)t->tickets));
	json_object_set_new(root, "welcome_latency_ms", jhist(&t->welcome_latency));
	json_object_set_new(root, "failures", fails);
	json_object_set_new(root, "failure_reasons", reasons);
	json_object_set_new(root, "failure_reasons_other",
	                    json_integer((json_int_t)t->reason_other));
	json_object_set_new(root, "records",
	                    json_pack("{s:I,s:I,s:I}", "acked", (json_int_t)t->records_acked,
	                              "unacked_at_end", (json_int_t)t->unacked_at_end,
	                              "sequence_adopted", (json_int_t)t->adopted));
	json_object_set_new(
	    root, "events",
	    json_pack("{s:I,s:I,s:I,s:I,s:I,s:f,s:o}", "generated", (json_int_t)t->events_generated,
	              "sent", (json_int_t)t->events_sent, "resent", (json_int_t)t->events_resent,
	              "acked", (json_int_t)t->events_acked, "throttled",
	              (json_int_t)t->events_throttled, "steady_window_s", window_s,
	              "acked_per_second_steady", window_s > 0 ? json_real(steady) : json_null()));
	json_t *lat = jhist(&t->ack_latency);
	json_object_set_new(lat, "unsampled_batches",
	                    json_integer((json_int_t)t->ack_latency_unsampled));
	json_object_set_new(root, "ack_latency_ms", lat);
	json_object_set_new(root, "commands",
	                    json_pack("{s:I,s:I,s:I,s:I,s:o}", "received",
	                              (json_int_t)t->commands_received, "succeeded",
	                              (json_int_t)t->commands_succeeded, "rejected",
	                              (json_int_t)t->commands_rejected, "results_acked",
	                              (json_int_t)t->results_acked, "result_ack_latency_ms",
	                              jhist(&t->command_latency)));
	json_object_set_new(
	    root, "storm",
	    !storm
	        ? json_null()
	        : json_pack("{s:b,s:b,s:o,s:o,s:o,s:I,s:I,s:I,s:b}", "observed",
	                    t->storm_first_drop_ns != 0, "all_dropped",
	                    t->storm_all_dropped_ns != 0, "first_drop_to_all_dropped_s",
	                    t->storm_all_dropped_ns
	                        ? json_real(secs(t->storm_all_dropped_ns - t->storm_first_drop_ns))
	                        : json_null(),
	                    "first_drop_to_all_welcomed_s",
	                    t->storm_all_welcomed_ns
	                        ? json_real(secs(t->storm_all_welcomed_ns - t->storm_first_drop_ns))
	                        : json_null(),
	                    "recovery_s",
	                    t->storm_recovered_ns
	                        ? json_real(secs(t->storm_recovered_ns - t->storm_first_drop_ns))
	                        : json_null(),
	                    "recovered", (json_int_t)t->storm_recovered, "reconnect_attempts",
	                    (json_int_t)t->storm_attempts, "max_concurrent_attempts",
	                    (json_int_t)storm_peak, "within_deadline", t->storm_recovered_ns != 0));
	double redial_s = t->redial_end_ns ? secs(t->redial_end_ns - t->redial_start_ns) : 0;
	json_object_set_new(
	    root, "resume",
	    o->scenario != LG_RESUME
	        ? json_null()
	        : json_pack("{s:o,s:I,s:I,s:o}", "seconds", redial_s > 0 ? json_real(redial_s) : json_null(),
	                    "tls_completed", (json_int_t)t->redial_tls_ok, "resumed",
	                    (json_int_t)t->redial_resumed, "handshakes_per_second",
	                    redial_s > 0 ? json_real((double)t->redial_tls_ok / redial_s)
	                                 : json_null()));
	json_object_set_new(
	    root, "fanout",
	    o->scenario != LG_FANOUT
	        ? json_null()
	        : json_pack("{s:I,s:I,s:I,s:I,s:f,s:o,s:o,s:o,s:o}", "issued_at_ms",
	                    (json_int_t)t->fanout_issued_ms, "queued", (json_int_t)t->fanout_queued,
	                    "commands_received", (json_int_t)t->fanout_received, "results_acked",
	                    (json_int_t)t->fanout_done, "signing_s", (double)t->fanout_sign_us / 1e6,
	                    "queue_committed_after_ms",
	                    t->fanout_committed_ms && t->fanout_issued_ms
	                        ? json_integer(t->fanout_committed_ms - t->fanout_issued_ms)
	                        : json_null(),
	                    "all_results_acked_after_ms",
	                    t->fanout_done_ms ? json_integer(t->fanout_done_ms - t->fanout_issued_ms)
	                                      : json_null(),
	                    "delivery_ms", jhist(&t->fanout_delivery), "result_acked_ms",
	                    jhist(&t->fanout_result)));
	json_object_set_new(
	    root, "promote",
	    o->scenario != LG_PROMOTE
	        ? json_null()
	        : json_pack("{s:I,s:I,s:I,s:o,s:o,s:o,s:I,s:I,s:I,s:o,s:s}", "promoted_at_ms",
	                    (json_int_t)t->promote_ms, "promoted", (json_int_t)t->promoted,
	                    "detected", (json_int_t)t->detected, "all_detected_after_ms",
	                    t->promote_done_ms ? json_integer(t->promote_done_ms - t->promote_ms)
	                                       : json_null(),
	                    "detection_seen_ms", jhist(&t->detect_seen), "detection_recorded_ms",
	                    jhist(&t->detect_recorded), "poll_ms", (json_int_t)o->poll_ms, "polls",
	                    (json_int_t)t->polls, "poll_errors", (json_int_t)t->poll_errors,
	                    "request_ms", jhist(&t->poll_latency), "first_error", t->poll_error));
	json_object_set_new(
	    root, "loadgen",
	    json_pack("{s:o,s:I,s:I,s:b,s:o}", "rss_kb_all_up",
	              t->all_welcomed_ns ? json_integer((json_int_t)t->rss_kb_up) : json_null(),
	              "rss_kb_end", (json_int_t)t->rss_kb_end, "rss_kb_peak", (json_int_t)t->hwm_kb,
	              "loop_closed_cleanly", t->loop_close_rc == 0, "processes", procs));

	FILE *out = stdout;
	if (o->json_path && !(out = fopen(o->json_path, "w"))) {
		fprintf(stderr, "%s: --json: cannot write %s: %s\n", LG_PROG, o->json_path,
		        strerror(errno));
		goto out;
	}
	if (json_dumpf(root, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) <
	        0 ||
	    fputc('\n', out) < 0 || (out != stdout ? fclose(out) : fflush(out)) != 0) {
		fprintf(stderr, "%s: cannot write the report: %s\n", LG_PROG, strerror(errno));
		goto out;
	}

	if (!o->quiet) {
		fprintf(stderr, "%s: %s: %s\n", LG_PROG, scenario_name(o->scenario),
		        t->goal_met ? "goal met" : "goal NOT met");
		fprintf(stderr,
		        "%s:   %llu certificates minted in %.2f s; %u of %u agents welcomed "
		        "at once at most, %u up at the end, %llu drops\n",
		        LG_PROG, (unsigned long long)t->certs_minted, secs((int64_t)t->mint_ns),
		        t->max_ready, o->agents, t->ready_at_end, (unsigned long long)t->drops);
		if (t->all_welcomed_ns)
			fprintf(stderr,
			        "%s:   all welcomed after %.2f s: %.0f handshakes/s over the ramp; "
			        "connect to Welcome p50 %.1f ms, p99 %.1f ms\n",
			        LG_PROG, ramp_s, (double)t->ramp_tls_ok / ramp_s,
			        (double)lg_hist_quantile(&t->welcome_latency, 0.5) / 1000,
			        (double)lg_hist_quantile(&t->welcome_latency, 0.99) / 1000);
		if (o->scenario == LG_INGEST)
			fprintf(stderr,
			        "%s:   events: %llu sent, %llu acked, %.0f acked/s over %.1f s "
			        "steady, Ack latency p50 %.1f ms, p99 %.1f ms; %llu unacked at the "
			        "end\n",
			        LG_PROG, (unsigned long long)t->events_sent,
			        (unsigned long long)t->events_acked, steady, window_s,
			        (double)lg_hist_quantile(&t->ack_latency, 0.5) / 1000,
			        (double)lg_hist_quantile(&t->ack_latency, 0.99) / 1000,
			        (unsigned long long)t->unacked_at_end);
		if (o->scenario == LG_FANOUT && t->fanout_issued_ms)
			fprintf(stderr,
			        "%s:   fanout: %u commands queued %lld ms after their issued_at; "
			        "results acknowledged %u, issued_at to Ack p50 %.1f ms, p99 %.1f ms, "
			        "max %.1f ms\n",
			        LG_PROG, t->fanout_queued,
			        (long long)(t->fanout_committed_ms - t->fanout_issued_ms), t->fanout_done,
			        (double)lg_hist_quantile(&t->fanout_result, 0.5) / 1000,
			        (double)lg_hist_quantile(&t->fanout_result, 0.99) / 1000,
			        (double)t->fanout_result.max_us / 1000);
		if (o->scenario == LG_PROMOTE && t->promote_ms)
			fprintf(stderr,
			        "%s:   promote: %u of %u hosts listed AFFECTED; auth events to listed "
			        "p50 %.1f ms, p99 %.1f ms, max %.1f ms (to status_since p99 %.1f ms); "
			        "%llu polls, %llu failed\n",
			        LG_PROG, t->detected, t->promoted,
			        (double)lg_hist_quantile(&t->detect_seen, 0.5) / 1000,
			        (double)lg_hist_quantile(&t->detect_seen, 0.99) / 1000,
			        (double)t->detect_seen.max_us / 1000,
			        (double)lg_hist_quantile(&t->detect_recorded, 0.99) / 1000,
			        (unsigned long long)t->polls, (unsigned long long)t->poll_errors);
		if (t->poll_error[0])
			fprintf(stderr, "%s:   first error: %s\n", LG_PROG, t->poll_error);
		if (o->scenario == LG_RESUME && t->redial_end_ns)
			fprintf(stderr,
			        "%s:   resume: all back after %.2f s: %.0f handshakes/s, %llu of %llu "
			        "resumed\n",
			        LG_PROG, redial_s, (double)t->redial_tls_ok / redial_s,
			        (unsigned long long)t->redial_resumed,
			        (unsigned long long)t->redial_tls_ok);
		if (storm && t->storm_recovered_ns)
			fprintf(stderr,
			        "%s:   storm: recovered %.2f s after the first drop, at most %u "
			        "attempts at once, %llu attempts\n",
			        LG_PROG, secs(t->storm_recovered_ns - t->storm_first_drop_ns),
			        storm_peak, (unsigned long long)t->storm_attempts);
		for (int i = 0; i < LG_REASONS && t->reason_count[i]; i++)
			fprintf(stderr, "%s:   %llu x %s\n", LG_PROG,
			        (unsigned long long)t->reason_count[i], t->reason[i]);
		if (t->all_welcomed_ns)
			fprintf(stderr,
			        "%s:   memory: %llu kB resident with all up, %llu kB peak\n",
			        LG_PROG, (unsigned long long)t->rss_kb_up,
			        (unsigned long long)t->hwm_kb);
		else
			fprintf(stderr, "%s:   memory: %llu kB peak\n", LG_PROG,
			        (unsigned long long)t->hwm_kb);
	}
	rc = t->goal_met ? 0 : 1;
out:
	json_decref(root);
	free(t);
	return rc;
}

/* --- worker processes --------------------------------------------------------- */

enum { W_MINTED = 1, W_PROGRESS, W_ARMED, W_RESULT, W_ERROR };

struct wmsg_hdr {
	uint32_t type;
	uint32_t len;
};

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int wsend(int fd, uint32_t type, const void *a, size_t alen, const void *b, size_t blen)
{
	struct wmsg_hdr h = {type, (uint32_t)(alen + blen)};
	if (write_all(fd, &h, sizeof(h)) < 0 || (alen && write_all(fd, a, alen) < 0) ||
	    (blen && write_all(fd, b, blen) < 0))
		return -1;
	return 0;
}

static void worker_progress(void *arg, const struct lg_progress *p)
{
	wsend(*(int *)arg, W_PROGRESS, p, sizeof(*p), NULL, 0);
}

static void worker_armed(void *arg, unsigned agents)
{
	uint32_t n = agents;
	wsend(*(int *)arg, W_ARMED, &n, sizeof(n), NULL, 0);
}

/* A worker: mints its agents' certificates, says so, waits for the common
 * start, runs, and sends its result. Returns the exit status. */
static int worker_main(const struct lg_options *o, const struct pki_ca *ca, EVP_PKEY *key,
                       unsigned first, unsigned count, int up, int go, uint32_t nslots)
{
	char err[512];
	int64_t start_ns;
	struct fleet *f = NULL;
	struct lg_result *res = calloc(1, sizeof(*res));
	struct lg_slot *slots = calloc(nslots, sizeof(*slots));
	struct lg_reporter rep = {worker_progress, worker_armed, &up};
	int rc = 1;
	if (!res || !slots) {
		snprintf(err, sizeof(err), "out of memory");
		wsend(up, W_ERROR, err, strlen(err) + 1, NULL, 0);
		goto out;
	}
	if (fleet_prepare(&f, o, ca, key, first, count, res, err, sizeof(err)) < 0) {
		wsend(up, W_ERROR, err, strlen(err) + 1, NULL, 0);
		goto out;
	}
	wsend(up, W_MINTED, NULL, 0, NULL, 0);
	ssize_t n;
	do
		n = read(go, &start_ns, sizeof(start_ns));
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(start_ns))
		goto out; /* the parent gave up */
	if (fleet_run(f, start_ns, &rep, slots, nslots, err, sizeof(err)) < 0) {
		wsend(up, W_ERROR, err, strlen(err) + 1, NULL, 0);
		goto out;
	}
	if (wsend(up, W_RESULT, res, sizeof(*res), slots, nslots * sizeof(*slots)) == 0)
		rc = 0;
out:
	fleet_free(f);
	free(res);
	free(slots);
	return rc;
}

struct worker {
	struct part part;
	int rfd, gofd;
	unsigned first, count;
	uint8_t *buf;
	size_t have, cap;
	int minted, armed, eof, exited;
	struct lg_progress prog;
};

static volatile sig_atomic_t parent_signal;

static void parent_signal_cb(int sig)
{
	parent_signal = sig;
}

static volatile sig_atomic_t parent_usr1;

static void parent_usr1_cb(int sig)
{
	parent_usr1 = 1;
}

/* Handles the whole messages in w's buffer. */
static void worker_input(struct worker *w, uint32_t nslots)
{
	size_t off = 0;
	while (w->have - off >= sizeof(struct wmsg_hdr)) {
		struct wmsg_hdr h;
		memcpy(&h, w->buf + off, sizeof(h));
		if (h.len > w->cap - sizeof(h)) {
			snprintf(w->part.error, sizeof(w->part.error),
			         "worker sent a message of %u bytes", h.len);
			w->eof = 1;
			return;
		}
		if (w->have - off - sizeof(h) < h.len)
			break;
		const uint8_t *p = w->buf + off + sizeof(h);
		switch (h.type) {
		case W_MINTED:
			w->minted = 1;
			break;
		case W_ARMED:
			w->armed = 1;
			break;
		case W_PROGRESS:
			if (h.len == sizeof(w->prog))
				memcpy(&w->prog, p, sizeof(w->prog));
			break;
		case W_RESULT:
			if (h.len == sizeof(struct lg_result) + nslots * sizeof(struct lg_slot)) {
				memcpy(w->part.res, p, sizeof(struct lg_result));
				memcpy(w->part.slots, p + sizeof(struct lg_result),
				       nslots * sizeof(struct lg_slot));
				w->part.lost = 0;
			}
			break;
		case W_ERROR:
			snprintf(w->part.error, sizeof(w->part.error), "%.*s", (int)h.len,
			         (const char *)p);
			break;
		}
		off += sizeof(h) + h.len;
	}
	memmove(w->buf, w->buf + off, w->have - off);
	w->have -= off;
}

/* Reads what the workers sent, for up to timeout_ms; 0 once all reached EOF. */
static int workers_poll(struct worker *ws, unsigned n, uint32_t nslots, int timeout_ms)
{
	struct pollfd pfd[PROCS_MAX];
	unsigned open = 0, idx[PROCS_MAX];
	for (unsigned k = 0; k < n; k++) {
		if (ws[k].eof)
			continue;
		pfd[open].fd = ws[k].rfd;
		pfd[open].events = POLLIN;
		idx[open++] = k;
	}
	if (open == 0)
		return 0;
	int rc = poll(pfd, open, timeout_ms);
	for (unsigned i = 0; rc > 0 && i < open; i++) {
		struct worker *w = &ws[idx[i]];
		if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		ssize_t got = read(w->rfd, w->buf + w->have, w->cap - w->have);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			w->eof = 1;
			continue;
		}
		w->have += (size_t)got;
		worker_input(w, nslots);
	}
	return 1;
}

static void workers_signal(struct worker *ws, unsigned n, int sig)
{
	for (unsigned k = 0; k < n; k++)
		if (ws[k].part.pid > 0 && !ws[k].exited)
			kill(ws[k].part.pid, sig);
}

static int run_workers(const struct lg_options *o, const struct pki_ca *ca, EVP_PKEY *key,
                       uint32_t nslots, const struct rlimit *rl)
{
	unsigned n = o->procs;
	struct worker *ws = calloc(n, sizeof(*ws));
	size_t cap =
	    sizeof(struct wmsg_hdr) + sizeof(struct lg_result) + nslots * sizeof(struct lg_slot);
	struct printer pr = {o, 0, 0, {0}};
	struct part *parts = NULL;
	int rc = 1;
	if (!ws)
		goto nomem;
	for (unsigned k = 0; k < n; k++) {
		struct worker *w = &ws[k];
		w->rfd = w->gofd = -1;
		w->first = (unsigned)((uint64_t)o->agents * k / n);
		w->count = (unsigned)((uint64_t)o->agents * (k + 1) / n) - w->first;
		w->cap = cap;
		w->part.lost = 1;
		if (!(w->buf = malloc(cap)) ||
		    !(w->part.res = calloc(1, sizeof(struct lg_result))) ||
		    !(w->part.slots = calloc(nslots, sizeof(struct lg_slot))))
			goto nomem;
	}
	fflush(NULL); /* nothing buffered may be written twice */
	for (unsigned k = 0; k < n; k++) {
		struct worker *w = &ws[k];
		int up[2], go[2];
		if (pipe(up) < 0 || pipe(go) < 0) {
			fprintf(stderr, "%s: cannot make a pipe: %s\n", LG_PROG, strerror(errno));
			goto out;
		}
		pid_t pid = fork();
		if (pid < 0) {
			fprintf(stderr, "%s: cannot start worker %u: %s\n", LG_PROG, k,
			        strerror(errno));
			close(up[0]);
			close(up[1]);
			close(go[0]);
			close(go[1]);
			goto out;
		}
		if (pid == 0) {
			for (unsigned j = 0; j < k; j++) {
				close(ws[j].rfd);
				close(ws[j].gofd);
			}
			close(up[0]);
			close(go[1]);
			exit(worker_main(o, ca, key, w->first, w->count, up[1], go[0], nslots));
		}
		close(up[1]);
		close(go[0]);
		w->part.pid = pid;
		w->rfd = up[0];
		w->gofd = go[1];
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = parent_signal_cb;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = parent_usr1_cb;
	sigaction(SIGUSR1, &sa, NULL);

	/* Every worker has its certificates before the clock starts. */
	uint64_t t0 = uv_hrtime();
	uint64_t mint_limit = t0 + (uint64_t)((o->deadline_s + WORKER_GRACE_S) * 1e9);
	for (;;) {
		unsigned minted = 0, gone = 0;
		for (unsigned k = 0; k < n; k++) {
			minted += ws[k].minted;
			gone += ws[k].eof;
		}
		if (minted == n || gone || parent_signal)
			break;
		if (uv_hrtime() > mint_limit) {
			fprintf(stderr, "%s: workers took too long to mint certificates\n",
			        LG_PROG);
			workers_signal(ws, n, SIGKILL);
			break;
		}
		workers_poll(ws, n, nslots, 200);
	}
	int64_t start_ns = (int64_t)uv_hrtime();
	int all_minted = 1;
	for (unsigned k = 0; k < n; k++)
		all_minted &= ws[k].minted && !ws[k].eof;
	if (all_minted && !parent_signal) {
		if (!o->quiet)
			fprintf(stderr, "%s: %u workers minted %u certificates in %.2f s\n",
			        LG_PROG, n, o->agents, (double)(uv_hrtime() - t0) / 1e9);
		for (unsigned k = 0; k < n; k++)
			write_all(ws[k].gofd, &start_ns, sizeof(start_ns));
	}
	for (unsigned k = 0; k < n; k++) {
		close(ws[k].gofd); /* a worker still waiting reads EOF and leaves */
		ws[k].gofd = -1;
	}

	pr.start_ns = pr.prev_ns = start_ns;
	int64_t last_print = start_ns,
	        kill_at = start_ns + (int64_t)((o->deadline_s + WORKER_GRACE_S) * 1e9);
	int armed_said = 0, forwarded = 0, killed = 0;
	while (workers_poll(ws, n, nslots, 200)) {
		int64_t now = (int64_t)uv_hrtime();
		if (parent_signal && !forwarded) {
			workers_signal(ws, n, SIGTERM);
			forwarded = 1;
		}
		if (parent_usr1) {
			parent_usr1 = 0;
			workers_signal(ws, n, SIGUSR1);
		}
		if (now >= kill_at && !killed) {
			fprintf(stderr,
			        "%s: workers still running %d s after the deadline: killing them\n",
			        LG_PROG, WORKER_GRACE_S);
			workers_signal(ws, n, SIGKILL);
			killed = 1;
		}
		unsigned armed = 0;
		for (unsigned k = 0; k < n; k++)
			armed += ws[k].armed;
		if (armed == n && !armed_said) {
			lg_print_armed(o, o->agents);
			armed_said = 1;
		}
		if (all_minted && now - last_print >= 1000000000ll) {
			struct lg_progress sum = {0};
			for (unsigned k = 0; k < n; k++) {
				sum.agents += ws[k].count;
				sum.ready += ws[k].prog.ready;
				sum.inflight += ws[k].prog.inflight;
				sum.waiting += ws[k].prog.waiting;
				sum.tls_ok += ws[k].prog.tls_ok;
				sum.welcomes += ws[k].prog.welcomes;
				sum.failures += ws[k].prog.failures;
				sum.events_sent += ws[k].prog.events_sent;
				sum.events_acked += ws[k].prog.events_acked;
			}
			print_progress(&pr, &sum);
			last_print = now;
		}
	}
	rc = 0;
out:
	for (unsigned k = 0; ws && k < n; k++) {
		struct worker *w = &ws[k];
		if (w->gofd >= 0)
			close(w->gofd);
		if (w->rfd >= 0)
			close(w->rfd);
		if (w->part.pid > 0) {
			while (waitpid(w->part.pid, &w->part.status, 0) < 0 && errno == EINTR)
				;
			w->exited = 1;
			if (w->part.lost && !w->part.error[0]) {
				if (WIFSIGNALED(w->part.status))
					snprintf(w->part.error, sizeof(w->part.error),
					         "worker died of signal %d",
					         WTERMSIG(w->part.status));
				else
					snprintf(w->part.error, sizeof(w->part.error),
					         "worker exited with status %d and no result",
					         WEXITSTATUS(w->part.status));
			}
			if (w->part.error[0])
				fprintf(stderr, "%s: worker %u (agents %u to %u): %s\n", LG_PROG, k,
				        w->first + 1, w->first + w->count, w->part.error);
		}
	}
	if (rc == 0) {
		parts = calloc(n, sizeof(*parts));
		if (!parts)
			goto nomem;
		for (unsigned k = 0; k < n; k++)
			parts[k] = ws[k].part;
		int any = 0;
		for (unsigned k = 0; k < n; k++)
			any |= !parts[k].lost;
		rc = any ? report(o, parts, n, nslots, rl) : 1;
		if (rc < 0)
			rc = 1;
	}
	goto done;
nomem:
	fprintf(stderr, "%s: out of memory\n", LG_PROG);
	rc = 1;
done:
	for (unsigned k = 0; ws && k < n; k++) {
		free(ws[k].buf);
		free(ws[k].part.res);
		free(ws[k].part.slots);
	}
	free(ws);
	free(parts);
	return rc;
}

static int run_single(const struct lg_options *o, const struct pki_ca *ca, EVP_PKEY *key,
                      uint32_t nslots, const struct rlimit *rl)
{
	char err[512];
	struct fleet *f = NULL;
	struct part part = {.pid = getpid()};
	struct printer pr = {o, 0, 0, {0}};
	struct lg_reporter rep = {single_progress, single_armed, &pr};
	int rc = 1;
	part.res = calloc(1, sizeof(*part.res));
	part.slots = calloc(nslots, sizeof(*part.slots));
	if (!part.res || !part.slots) {
		fprintf(stderr, "%s: out of memory\n", LG_PROG);
		goto out;
	}
	if (fleet_prepare(&f, o, ca, key, 0, o->agents, part.res, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", LG_PROG, err);
		goto out;
	}
	if (!o->quiet)
		fprintf(stderr, "%s: minted %u certificates in %.2f s\n", LG_PROG, o->agents,
		        (double)part.res->mint_ns / 1e9);
	pr.start_ns = pr.prev_ns = (int64_t)uv_hrtime();
	if (fleet_run(f, pr.start_ns, &rep, part.slots, nslots, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", LG_PROG, err);
		goto out;
	}
	if (part.res->loop_close_rc != 0)
		fprintf(stderr, "%s: %s\n", LG_PROG, err);
	rc = report(o, &part, 1, nslots, rl);
	if (rc < 0)
		rc = 1;
out:
	fleet_free(f);
	free(part.res);
	free(part.slots);
	return rc;
}

int main(int argc, char **argv)
{
	struct lg_options o;
	char err[512];
	struct pki_ca *ca = NULL;
	EVP_PKEY *key = NULL;
	struct rlimit rl;
	int rc = parse_args(argc, argv, &o);
	if (rc > 0) {
		usage(stdout);
		return 0;
	}
	if (rc < 0)
		return 2;
	util_ignore_sigpipe();
	log_init(stderr, (enum log_level)o.log_level);
	log_set_prefix(LG_PROG);
	if (check_files(&o) < 0)
		return 2;
	getrlimit(RLIMIT_NOFILE, &rl);
	rc = 1;
	if (pki_ca_load(o.pki_dir, &ca, err, sizeof(err)) < 0 ||
	    pki_ca_keygen(ca, PKI_ROLE_AGENT, &key, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: --pki: %s\n", LG_PROG, err);
		goto out;
	}
	uint32_t nslots = lg_slots_needed(&o);
	if (o.procs == 1)
		rc = run_single(&o, ca, key, nslots, &rl);
	else
		rc = run_workers(&o, ca, key, nslots, &rl);
out:
	EVP_PKEY_free(key);
	pki_ca_free(ca);
	return rc;
}
