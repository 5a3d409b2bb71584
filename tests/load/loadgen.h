/* exfleet-loadgen: many simulated agents in one process, speaking the real
 * protocol over mutual TLS to a collector on this machine.
 *
 * loadgen.c  the command line, file limits, worker processes and the report
 * fleet.c    one process's agents on one libuv loop: sessions and scenarios
 * records.c  what a simulated Exchange 5.5 host sends (Hello, Snapshot, ...)
 * issue.c    fanout: signed commands queued in the collector's store
 * api_poll.c promote: watching the collector's HTTPS API for status changes
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

enum lg_scenario { LG_CONNECT, LG_INGEST, LG_STORM, LG_FANOUT, LG_PROMOTE, LG_RESUME };

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
	uint64_t handshake_timeout_ms; /* TCP connected to TLS done, at most */
	int cert_days;
	int no_resume;        /* never offer a session ticket: full handshakes only */
	const char *store;    /* fanout: the collector's store, where commands are queued */
	double issue_after_s; /* fanout, promote: from armed to the commands or the burst */
	char api[64];         /* promote: the collector's HTTPS API, "127.0.0.1:8443" */
	struct sockaddr_in api_addr;
	unsigned poll_ms;     /* promote: API poll interval */
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
	uint64_t tls_resumed; /* handshakes that resumed a session */
	uint64_t tickets;     /* session tickets received */
	/* fanout: wall-clock ms; the commands' issued_at, and the moment the
	 * transaction that queued them committed */
	int64_t fanout_issued_ms, fanout_committed_ms, fanout_done_ms;
	uint64_t fanout_sign_us;
	uint32_t fanout_queued, fanout_received, fanout_done;
	struct lg_hist fanout_delivery; /* issued_at -> Command received */
	struct lg_hist fanout_result;   /* issued_at -> its result acknowledged */
	/* promote: wall-clock ms of the burst; detections through the API */
	int64_t promote_ms, promote_done_ms;
	uint32_t promoted, detected;
	uint64_t polls, poll_errors;
	struct lg_hist detect_seen;     /* auth events sent -> host listed AFFECTED */
	struct lg_hist detect_recorded; /* auth events sent -> its status_since */
	struct lg_hist poll_latency;    /* one API request */
	char poll_error[LG_REASON_LEN];
	/* resume: the second ramp, every agent reconnecting with its ticket */
	int64_t redial_start_ns, redial_end_ns;
	uint64_t redial_tls_ok, redial_resumed;
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

/* The line a harness waits for, per scenario (storm: restart the
 * collector now; fanout, promote: measure the idle fleet now). */
void lg_print_armed(const struct lg_options *o, unsigned agents);

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

/* What a host's snapshot shows. */
enum lg_host_state {
	LG_HOST_HEALTHY,  /* member server, Exchange as CORP\exsvc with its rights */
	LG_HOST_AT_RISK,  /* member server, Exchange as the local HOST\exsvc */
	LG_HOST_PROMOTED, /* after dcpromo: a DC, the SAM and HOST\exsvc gone,
	                   * every Exchange service stopped with 1069 */
};
void records_snapshot(Exfleet__AgentMessage *m, const char *host_id, uint64_t seq, int64_t now_ms,
                      enum lg_host_state state, int64_t promoted_at_ms);

/* The events a dcpromo'd host logs, in order: SCM 7038 (%%1326) and 7000
 * (%%1069) for each Exchange service, then MSExchangePOP3 and
 * MSExchangeIMAP4 13003 (a required privilege is not held). */
#define LG_PROMOTE_EVENTS 14
#define LG_PROMOTE_AUTH_FIRST 12 /* the first auth-privilege event */
/* Events first..first+n-1 (n <= LG_BATCH_MAX): routine ones, except that
 * sequences promote_first..promote_first+LG_PROMOTE_EVENTS-1 (0: none)
 * are the dcpromo events. */
void records_events(Exfleet__AgentMessage *m, const char *host_id, uint64_t first, size_t n,
                    int64_t now_ms, uint64_t promote_first);
void records_heartbeat(Exfleet__AgentMessage *m, uint64_t highest, int64_t now_ms);
void records_result(Exfleet__AgentMessage *m, uint64_t seq, const char *command_id,
                    Exfleet__CommandStatus status, const char *reason, const char *step,
                    int64_t started_ms, int64_t now_ms);

/* /proc/self/status: resident set now and its peak, kB (0 when unknown). */
void lg_rss(uint64_t *rss_kb, uint64_t *hwm_kb);
/* Wall-clock time (the collector's clock too), microseconds. */
int64_t lg_wall_us(void);

/* issue.c: fanout's commands. One RESCAN per host, signed by an operator
 * certificate minted from the CA, all with one issued_at. */
struct lg_command {
	char id[33];
	char host_id[PKI_NAME_MAX + 1];
	uint8_t *envelope; /* an encoded Exfleet__Command */
	size_t len;
};
/* Signs n commands for hosts first..first+n-1 (fleet numbering) issued at
 * issued_ms, as one batch by an operator minted from ca; 0 or -1 with err.
 * Free with lg_commands_free. */
int lg_commands_sign(const struct lg_options *o, const struct pki_ca *ca, unsigned first,
                     unsigned n, int64_t issued_ms, struct lg_command **out, char *err,
                     size_t errlen);
/* How long signing takes per command in a batch, microseconds (a trial batch). */
int64_t lg_commands_sign_cost_us(const struct pki_ca *ca);
/* Queues them in the collector's store (o->store) in one transaction, as
 * exfleetctl would one by one; 0 or -1 with err. */
int lg_commands_queue(const struct lg_options *o, const struct lg_command *c, unsigned n,
                      int64_t issued_ms, char *err, size_t errlen);
void lg_commands_free(struct lg_command *c, unsigned n);

/* api_poll.c: a thread that lists the hosts the collector's API shows as
 * AFFECTED (every o->poll_ms, page by page), over HTTPS with a viewer
 * certificate minted from the CA, and reports each of agents
 * first..first+count-1 once, when first seen. */
struct lg_poller;
int lg_poller_start(struct lg_poller **out, const struct lg_options *o, const struct pki_ca *ca,
                    EVP_PKEY *key, unsigned first, unsigned count, char *err, size_t errlen);
/* Hands over what was seen since the last call: agent index (fleet
 * numbering), when the listing that showed it arrived (wall clock, µs), and
 * the status_since it gave (ms, 0 when absent). */
typedef void (*lg_seen_cb)(void *arg, unsigned index, int64_t seen_us, int64_t since_ms);
void lg_poller_drain(struct lg_poller *p, lg_seen_cb cb, void *arg);
/* Stops the thread and adds its counters to res. */
void lg_poller_stop(struct lg_poller *p, struct lg_result *res);

#endif
