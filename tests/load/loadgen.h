/* exfleet-loadgen: many simulated agents in one process, speaking the real
 * protocol over mutual TLS to a collector on this machine.
 *
 * loadgen.c  the command line, file limits, worker processes and the report
 * fleet.c    one process's agents on one libuv loop: sessions and scenarios
 * records.c  what a simulated Exchange 5.5 host sends (Hello, Snapshot, ...)
 * stats.c    latency histograms */
#ifndef EXFLEET_LOADGEN_H
#define EXFLEET_LOADGEN_H

#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>

#include <openssl/evp.h>

#include "exfleet.pb-c.h"
#include "pki.h"

#define LG_PROG "exfleet-loadgen"
#define LG_SLOT_MS 100    /* resolution of the per-process timelines */
#define LG_BATCH_MAX 1000 /* events per EventBatch */
#define LG_REASONS 8      /* distinct close reasons kept, with counts */
#define LG_REASON_LEN 120

enum lg_scenario { LG_CONNECT, LG_INGEST, LG_STORM };

struct lg_options {
	enum lg_scenario scenario;
	char collector[64]; /* "127.0.0.1:7443", as given */
	struct sockaddr_in target;
	const char *name; /* the collector's certificate name */
	const char *pki_dir;
	const char *prefix; /* host ids are prefix + zero-padded number */
	unsigned agents;
	unsigned procs;
	double rate;       /* new sessions per second per fleet, 0: no limit */
	unsigned inflight; /* handshakes in progress at most, during the ramp */
	double hold_s;
	double events_per_sec; /* per agent */
	unsigned batch;
	double duration_s;
	double deadline_s;
	unsigned sources; /* source addresses 127.0.0.1..K; 0: the system's choice */
	unsigned window;  /* unacknowledged records per agent, at most */
	uint64_t reconnect_min_ms;
	uint64_t reconnect_max_ms;
	int cert_days;
	int quiet;
	int log_level;
	const char *json_path;
};

/* Why a connection attempt or a session ended. */
enum lg_fail {
	LG_FAIL_CONNECT, /* TCP connect or bind */
	LG_FAIL_TLS,     /* handshake refused or broken */
	LG_FAIL_TLS_TIMEOUT,
	LG_FAIL_EARLY_CLOSE, /* closed after the handshake, before a Welcome */
	LG_FAIL_REFUSED,     /* Welcome with an error */
	LG_FAIL_SHED,        /* Welcome with retry_after */
	LG_FAIL_WELCOME_TIMEOUT,
	LG_FAIL_PROTOCOL,
	LG_FAIL_DROPPED, /* a welcomed session ended */
	LG_FAIL_SILENT,  /* the collector said nothing for 3 heartbeats */
	LG_FAIL_SETUP,   /* our side: memory, certificate */
	LG_FAIL_COUNT
};

extern const char *const lg_fail_names[LG_FAIL_COUNT];

/* Log-linear histogram of microseconds: 16 buckets per power of two, so a
 * percentile is within 1/16 of the truth, in fixed memory. */
#define LG_HIST_BUCKETS 1024
struct lg_hist {
	uint64_t count;
	uint64_t max_us;
	uint64_t bucket[LG_HIST_BUCKETS];
};

void lg_hist_add(struct lg_hist *h, uint64_t us);
void lg_hist_merge(struct lg_hist *into, const struct lg_hist *from);
/* The value below which a fraction q of the samples lie, in microseconds. */
uint64_t lg_hist_quantile(const struct lg_hist *h, double q);

/* One timeline slot (LG_SLOT_MS) of one process. */
struct lg_slot {
	uint32_t events_acked;
	uint32_t max_inflight; /* connection attempts in progress, at most */
};

/* Live counters, once a second. */
struct lg_progress {
	uint32_t agents, ready, inflight, waiting;
	uint64_t tls_ok, welcomes, failures, events_sent, events_acked;
};

/* Everything one process measured; plain data, so a worker sends it to the
 * parent through a pipe as it is. Times are uv_hrtime() nanoseconds, which
 * all processes share (CLOCK_MONOTONIC); 0 means "did not happen". */
struct lg_result {
	uint32_t agents;
	int goal_met;
	int interrupted;
	int loop_close_rc; /* uv_loop_close: 0 when every handle was closed */
	uint64_t certs_minted;
	uint64_t mint_ns;
	int64_t start_ns; /* the ramp began (common to all processes) */
	int64_t end_ns;
	int64_t all_welcomed_ns; /* every agent of this process welcomed at once */
	int64_t steady_start_ns, steady_end_ns;
	uint64_t ramp_tls_ok; /* handshakes completed up to all_welcomed */
	uint64_t attempts, tls_ok, welcomes, drops;
	uint32_t max_ready, ready_at_end, ever_welcomed, max_inflight;
	uint64_t fail[LG_FAIL_COUNT];
	char reason[LG_REASONS][LG_REASON_LEN];
	uint64_t reason_count[LG_REASONS];
	uint64_t reason_other;
	uint64_t adopted; /* Welcomes with a stored sequence beyond ours */
	uint64_t events_generated, events_sent, events_resent, events_acked, events_throttled;
	uint64_t steady_events_acked;
	uint64_t records_acked;
	uint64_t unacked_at_end; /* records generated, never acknowledged */
	uint64_t commands_received, commands_succeeded, commands_rejected, results_acked;
	/* storm */
	int64_t storm_first_drop_ns, storm_all_dropped_ns, storm_all_welcomed_ns,
	    storm_recovered_ns;
	uint64_t storm_attempts;
	uint32_t storm_recovered;
	/* memory, kB */
	uint64_t rss_kb_up, rss_kb_end, hwm_kb;
	struct lg_hist welcome_latency; /* connect began -> Welcome */
	struct lg_hist ack_latency;     /* EventBatch sent -> Ack covering it */
	uint64_t ack_latency_unsampled; /* batches sent while 64 awaited their Ack */
	struct lg_hist command_latency; /* Command received -> Ack of its result */
	uint32_t nslots;
};

/* How a fleet reports while it runs: straight to stderr in one process,
 * through the parent in several. */
struct lg_reporter {
	void (*progress)(void *arg, const struct lg_progress *p);
	void (*armed)(void *arg, unsigned agents);
	void *arg;
};

/* Agents [first, first + count) of the whole fleet, on a loop of their own.
 * fleet_prepare mints their certificates; fleet_run runs the scenario from
 * start_ns until its goal or the deadline and fills res and slots (nslots
 * entries, zeroed by the caller). 0, or negative when it could not start. */
struct fleet;
int fleet_prepare(struct fleet **out, const struct lg_options *o, const struct pki_ca *ca,
                  EVP_PKEY *key, unsigned first, unsigned count, struct lg_result *res, char *err,
                  size_t errlen);
int fleet_run(struct fleet *f, int64_t start_ns, const struct lg_reporter *rep,
              struct lg_slot *slots, uint32_t nslots, char *err, size_t errlen);
void fleet_free(struct fleet *f);

/* Timeline slots needed for the options (deadline and drain). */
uint32_t lg_slots_needed(const struct lg_options *o);
/* The host id of agent number i (0-based) of the whole fleet. */
void lg_host_id(const struct lg_options *o, unsigned i, char *out, size_t len);

/* records.c: the messages a simulated host sends. Each fills the caller's
 * envelope m with pointers into storage that stays valid until the next call. */
void records_hello(Exfleet__AgentMessage *m, const char *host_id, unsigned index, uint64_t highest,
                   uint64_t lowest);
void records_snapshot(Exfleet__AgentMessage *m, const char *host_id, uint64_t seq, int64_t now_ms);
/* Events first..first+n-1 (n <= LG_BATCH_MAX). */
void records_events(Exfleet__AgentMessage *m, const char *host_id, uint64_t first, size_t n,
                    int64_t now_ms);
void records_heartbeat(Exfleet__AgentMessage *m, uint64_t highest, int64_t now_ms);
void records_result(Exfleet__AgentMessage *m, uint64_t seq, const char *command_id,
                    Exfleet__CommandStatus status, const char *reason, const char *step,
                    int64_t started_ms, int64_t now_ms);

/* /proc/self/status: resident set now and its peak, kB (0 when unknown). */
void lg_rss(uint64_t *rss_kb, uint64_t *hwm_kb);

#endif
