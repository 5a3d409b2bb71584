/* exfleet-agent: its configuration and its session with the collector. */
#ifndef EXFLEET_AGENT_H
#define EXFLEET_AGENT_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "backoff.h"
#include "util.h"
#include "config.h"
#include "probe.h"
#include "spool.h"
#include "tls.h"

struct agent_config {
	char *host_id;
	char *site;
	char *wave;
	int log_level;
	char *collector_address;     /* host:port */
	char *collector_name;        /* name in the collector's certificate */
	uint64_t heartbeat_ms;       /* until the collector's Welcome says otherwise */
	uint64_t reconnect_min_ms;
	uint64_t reconnect_max_ms;
	uint64_t max_frame;
	/* config.c reads every key's field as a pointer first: keep each
	 * bool 8-byte aligned. */
	bool resumption;             /* offer the last session when reconnecting */
	char *ca_file;
	char *cert_file;
	char *key_file;
	char *crl_file;
	bool allow_tls12;
	char *probe_backend;
	char *probe_host_file;
	uint64_t probe_rescan_ms;
	char *spool_dir;
	uint64_t spool_max;
	int spool_sync;              /* enum spool_sync */
	struct config_list watched_services;
	struct config_list event_levels;   /* error, warning, information, audit_success, ... */
	struct config_list event_always;   /* SOURCE/ID forwarded whatever its level */
	char *replay_cache;
	uint64_t restart_timeout_ms;
	uint64_t clock_skew_ms;      /* how far a command's times may be off */
	char *sealing_key;           /* X25519 key sealed passwords are opened with */
	struct config_list commands_enabled; /* action names, agent_action_names */
	struct config_list allowed_rights;   /* what GRANT_RIGHTS may grant */
	char *service_pack_installer;        /* REAPPLY_SERVICE_PACK runs only this */
	char *service_pack_args;
};

/* The actions [commands] enabled may name (lower case), NULL-terminated:
 * each is its Command action's name ("grant_rights" is GRANT_RIGHTS). */
extern const char *const agent_action_names[];

/* Loads and checks path; on failure err names file, line and key. */
int agent_config_load(const char *path, struct agent_config *cfg, struct config_error *err);
void agent_config_free(struct agent_config *cfg);
void agent_config_reference(FILE *out);

enum session_state {
	SESSION_IDLE,
	SESSION_RESOLVING,  /* looking up the collector's address */
	SESSION_CONNECTING, /* TCP and TLS */
	SESSION_HELLO,      /* Hello sent, waiting for Welcome */
	SESSION_STREAMING,
	SESSION_BACKOFF,    /* waiting to reconnect */
	SESSION_STOPPED,
};

struct commands;

struct agent_session {
	uv_loop_t *loop;
	const struct agent_config *cfg;
	const char *platform;
	SSL_CTX *tls;
	struct util_file_stamp crl_stamp; /* the [tls] crl in force, here and for commands */
	struct spool *spool;
	struct commands *commands;
	uint64_t sent_upto;       /* records up to here were sent on this session */
	struct tls_conn conn;
	int conn_open;            /* conn's handles exist until its close_cb */
	SSL_SESSION *last_session; /* the collector's newest ticket, offered next time */
	uint64_t resumed;         /* sessions that resumed one */
	enum session_state state;
	uv_getaddrinfo_t resolve;
	int resolving;
	uv_timer_t timer;         /* backoff delay, Welcome deadline, heartbeat tick */
	struct backoff backoff;
	uint64_t retry_after_ms;  /* from the last Welcome; 0 when none */
	int64_t down_since_ms;    /* the first failure since the last Welcome, 0: none */
	uint64_t heartbeat_ms;
	int64_t last_rx_ms, last_tx_ms;
	uint64_t welcomes;        /* sessions the collector accepted */
	void (*stopped_cb)(struct agent_session *s);
	void *stopped_arg;        /* for stopped_cb */
};

int session_init(struct agent_session *s, uv_loop_t *loop, const struct agent_config *cfg,
		 SSL_CTX *tls, struct spool *spool, struct commands *commands, const char *platform);
void session_start(struct agent_session *s);
/* New records are in the spool: send them if the session is streaming. */
void session_kick(struct agent_session *s);
/* Ends the session and stops reconnecting; stopped_cb once all is closed. */
void session_stop(struct agent_session *s, void (*stopped_cb)(struct agent_session *s));

/* The agent program (main.c): parses argv as exfleet-agent does and runs
 * until stopped; returns the exit status. */
int agent_main(int argc, char **argv);
/* Asks the running agent to stop cleanly, as SIGTERM does; safe from any
 * thread, also before agent_main has started its loop. */
void agent_request_stop(void);

#endif
