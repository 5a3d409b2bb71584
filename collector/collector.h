/* exfleet-collector: its configuration and its agent-facing server. */
#ifndef EXFLEET_COLLECTOR_H
#define EXFLEET_COLLECTOR_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "config.h"
#include "hostmap.h"
#include "relay.h"
#include "store.h"
#include "tls.h"

struct collector_config {
	char *id;                /* this collector's name, sent in Welcome */
	char *listen;            /* host:port for agents */
	int log_level;
	uint64_t heartbeat_ms;   /* interval the agents are told to keep */
	uint64_t handshake_timeout_ms;
	int64_t max_handshakes;  /* TLS handshakes in progress at once */
	int64_t max_waiting;     /* accepted connections waiting for a handshake slot */
	uint64_t wait_timeout_ms; /* and how long one may wait */
	int64_t max_sessions;    /* welcomed sessions; beyond, Welcome{retry_after} */
	uint64_t retry_after_ms;
	uint64_t max_frame;
	uint64_t write_queue_max;  /* bytes queued to one agent before it is dropped */
	char *store_path;
	char *api_listen;          /* host:port of the operators' HTTPS API; NULL: none */
	uint64_t api_max_body;
	int64_t api_page_max;
	int64_t api_max_connections;
	uint64_t api_query_budget_ms;
	uint64_t api_signin_ttl_ms;     /* a dashboard sign-in link works this long */
	uint64_t api_session_ttl_ms;    /* a dashboard session lasts this long */
	int64_t store_queue_high;
	int64_t store_queue_low;
	uint64_t event_retention_ms;
	int64_t events_per_host;
	struct config_list status_services;
	struct config_list status_auth;    /* SOURCE/ID */
	struct config_list status_rights;
	uint64_t status_retention_ms;
	char *ca_file;
	char *cert_file;
	char *key_file;
	char *crl_file;
	bool allow_tls12;
	char *ticket_keys_file;    /* NULL: beside the store */
	uint64_t ticket_rotation_ms;
	/* config.c reads every key's field as a pointer first: keep each
	 * bool 8-byte aligned. */
	bool resumption;           /* session tickets for agents */
};

int collector_config_load(const char *path, struct collector_config *cfg,
			  struct config_error *err);
/* The status rules the configuration names; they point into cfg, and
 * rules->auth is allocated (free it). */
int collector_status_rules(const struct collector_config *cfg, struct status_rules *rules,
			   char *err, size_t errlen);
void collector_config_free(struct collector_config *cfg);
void collector_config_reference(FILE *out);

enum agent_state {
	AGENT_WAITING,   /* accepted, waiting for a handshake slot */
	AGENT_HANDSHAKE, /* TLS in progress */
	AGENT_HELLO,     /* verified, waiting for Hello */
	AGENT_READY,     /* welcomed */
};

struct agent_conn {
	struct tls_conn conn;
	struct server *server;
	enum agent_state state; /* once READY, the host id is conn.peer_name */
	uint64_t acked;          /* highest sequence acknowledged on this session */
	int64_t connected_ms;
	int64_t last_rx_ms;
	int64_t stalled_since_ms;  /* our replies have queued up since then */
	struct agent_conn *prev, *next;
	struct agent_conn *wait_prev, *wait_next; /* the server's waiting queue */
};

struct server {
	uv_loop_t *loop;
	const struct collector_config *cfg;
	SSL_CTX *tls;
	struct tls_limits limits;
	uv_tcp_t listener;
	char bound[80];          /* the address listened on, port resolved */
	uv_timer_t sweep;        /* Hello deadlines and silent agents, once a second */
	struct agent_conn *conns;
	unsigned nconns;
	unsigned nready;
	unsigned nhandshakes;    /* in progress */
	unsigned nwaiting;
	struct agent_conn *wait_head, *wait_tail; /* FIFO of AGENT_WAITING */
	uint64_t handshakes_done, shed, emfile;
	uint64_t resumed;        /* handshakes that resumed a session */
	uint64_t trimmed_at;     /* handshakes_done when memory was last trimmed */
	uint64_t ticket_refresh_ms; /* send live sessions a new ticket this often; 0: never */
	int64_t last_emfile_log_ms;
	struct hostmap sessions; /* host id -> its welcomed agent_conn */
	struct store *store;
	struct relay relay;
	int readers_paused;      /* the store is behind: no session reads */
	uint64_t pauses;         /* times that happened */
	uint64_t acks;           /* Acks sent */
	int stopping;
	void (*stopped_cb)(struct server *srv);
};

int server_start(struct server *srv, uv_loop_t *loop, const struct collector_config *cfg,
		 SSL_CTX *tls, struct store *store, char *err, size_t errlen);
/* The store's committed callback: acknowledges what is now durable. */
void server_committed(struct store_write *w, void *arg);
/* Reads [tls] crl again: in force for the next handshake and for the relay's
 * checks, and the sessions of agents it revokes are closed (*closed of
 * them). *revoked: how many certificates it lists. A file that cannot be
 * read, or that the CA did not sign, changes nothing for agents: -1 with
 * err. */
int server_reload_crl(struct server *srv, size_t *revoked, unsigned *closed, char *err,
		      size_t errlen);
/* Closes the listener and every session; stopped_cb once all are closed. */
void server_stop(struct server *srv, void (*stopped_cb)(struct server *srv));

#endif
