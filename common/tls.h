/* TLS over libuv: OpenSSL with memory BIOs on a uv_tcp_t, carrying frames.
 *
 * One struct tls_conn per connection, embedded by its owner (the collector's
 * session, the agent's session, a test). The connection owns the socket and
 * its timer; it calls back when the peer is verified, for each whole frame,
 * and once when everything is closed, which is when the owner may free it. */
#ifndef EXFLEET_TLS_H
#define EXFLEET_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "frame.h"
#include "log.h"

struct tls_config {
	const char *ca_file;   /* trusted CA (PEM) */
	const char *cert_file; /* our certificate (PEM) */
	const char *key_file;  /* our key (PEM), refused if group/others can read it */
	const char *crl_file;  /* optional CRL (PEM): revoked peers are refused */
	int allow_tls12;       /* TLS 1.3 only unless set */
};

/* A server context requires a client certificate from the CA; a client
 * context verifies the server's chain (and name, per connection), and hands
 * every session ticket it gets to its connection's session_cb. A resumed
 * session's client certificate is checked again against the CRL and its
 * validity as of now: a revoked or expired agent gets a full handshake,
 * which refuses it. */
int tls_ctx_new(SSL_CTX **out, int server, const struct tls_config *cfg, char *err,
		size_t errlen);
/* Server: session resumption. Each session gets one TLS 1.3 ticket sealed
 * with keys kept in keys_file (made mode 0600 when missing, refused when
 * others may read it), so that agents resume after a restart too. A new
 * key every rotation_ms (0: a day); the one before still opens tickets,
 * and a ticket lives one rotation period. Without this call a server
 * context issues no tickets. */
int tls_ctx_enable_tickets(SSL_CTX *ctx, const char *keys_file, uint64_t rotation_ms, char *err,
			   size_t errlen);
/* How long a ticket from this server context stays good (the rotation
 * period), 0 when it issues none. */
uint64_t tls_ctx_ticket_lifetime_ms(SSL_CTX *ctx);
/* A client context of the caller's own making hands its tickets to
 * session_cb too (tls_ctx_new's client contexts already do). */
void tls_ctx_keep_sessions(SSL_CTX *ctx);
/* Reads crl_file again and puts it in force for ctx's verifications from
 * now on, resumptions included; a server handshake whose step on the thread
 * pool checked against the CRL before is checked again once it is back. A file that does not parse, or that no CA of ctx signed,
 * changes nothing. *revoked (may be NULL) gets how many certificates it
 * lists. 0, or -1 with err (also for a context made without a CRL). */
int tls_ctx_reload_crl(SSL_CTX *ctx, const char *crl_file, size_t *revoked, char *err,
		       size_t errlen);
/* 1 when the CRL in force for ctx revokes cert. */
int tls_ctx_revoked(SSL_CTX *ctx, X509 *cert);

enum tls_state {
	TLS_IDLE,       /* initialised, no socket yet */
	TLS_CONNECTING, /* TCP connect in progress (client) */
	TLS_HANDSHAKE,
	TLS_READY,      /* peer verified, frames flow */
	TLS_CLOSING,
};

/* Why reading is paused; reading runs only while no reason holds. */
enum {
	TLS_PAUSE_WRITE = 1, /* our queue to the peer is above the high mark */
	TLS_PAUSE_OWNER = 2, /* the owner asked (e.g. its store is behind) */
	TLS_PAUSE_STEP = 4,  /* a handshake step is on the thread pool */
};

struct tls_limits {
	size_t max_frame;           /* default 1 MiB */
	size_t write_high;          /* stop reading above this many queued bytes */
	size_t write_low;           /* resume at or below this */
	size_t write_max;           /* close the session above this */
	uint64_t handshake_timeout_ms;
	/* Server: each handshake step runs on libuv's thread pool, so the
	 * loop only moves bytes while thousands of agents reconnect; the
	 * connection is not read, and a close waits, until its step is done. */
	int offload_handshake;
};

void tls_limits_default(struct tls_limits *l);

struct tls_conn;

struct tls_conn_ops {
	/* Handshake done and the peer's certificate verified. */
	void (*ready_cb)(struct tls_conn *c);
	/* One whole frame; the payload is valid only during the call. */
	void (*frame_cb)(struct tls_conn *c, const uint8_t *payload, size_t len);
	/* Every handle is closed: the owner may free c now. */
	void (*close_cb)(struct tls_conn *c);
	/* Optional: everything queued has been written (a producer that
	 * paused on write_queued may go on). */
	void (*drained_cb)(struct tls_conn *c);
	/* Optional, client: the server sent a session to resume with later.
	 * Return 1 to keep it (the reference is then the owner's: offer it with
	 * SSL_set_session before the handshake, free with SSL_SESSION_free),
	 * 0 to let it go. */
	int (*session_cb)(struct tls_conn *c, SSL_SESSION *session);
};

/* The longest close reason kept; a longer one is cut. */
#define TLS_REASON_MAX 200
#define TLS_NAME_MAX 64 /* a certificate's CN */
#define TLS_ADDR_MAX 64 /* "[v6 address]:port" and its NUL */

struct tls_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;      /* handshake and close deadlines */
	union {                /* a connection connects, then shuts down */
		uv_connect_t connect_req;
		uv_shutdown_t shutdown_req;
	};
	SSL_CTX *ctx;
	SSL *ssl;              /* NULL while a server connection is held back */
	/* Ciphertext from the socket, for OpenSSL: the loop's read buffer
	 * while a read is handled, a copy of what is left only when some is */
	const uint8_t *in;
	size_t in_len;
	uint8_t *in_copy;      /* in, when it is ours (NULL otherwise) */
	struct write_req *out; /* ciphertext from OpenSSL, for the socket */
	enum tls_state state;
	unsigned paused;       /* TLS_PAUSE_* bits */
	int reading;
	int handles_open;
	size_t write_queued;   /* bytes handed to uv_write and not yet written */
	struct tls_limits limits;
	struct frame_reader frames;
	const struct tls_conn_ops *ops;
	void *data;            /* the owner's */
	/* For log lines: the address ("127.0.0.1:40312"), then "name address"
	 * once verified; tls_conn_addr() is the address alone. */
	char peer[TLS_NAME_MAX + 1 + TLS_ADDR_MAX];
	unsigned char addr_at; /* where in peer the address starts */
	char peer_name[TLS_NAME_MAX + 1]; /* certificate subject CN */
	int peer_role;         /* enum pki_role, -1 before the handshake */
	int resumed;           /* the handshake resumed an earlier session */
	int64_t ticket_ms;     /* server: when this session's last ticket was sent */
	char *close_reason;    /* why it closed, from tls_conn_close until close_cb returns */
	uint64_t frames_in, frames_out;
	/* offload_handshake: the step in flight, and a close that waits for it */
	uv_work_t step;
	int step_busy, step_rc, step_err;
	int close_held;
	enum log_level close_level;
	char *step_why;        /* why the step failed; NULL if it did not */
};

/* The peer's address, "127.0.0.1:40312". */
static inline const char *tls_conn_addr(const struct tls_conn *c)
{
	return c->peer + c->addr_at;
}

/* Server side: accepts one pending connection from server. */
int tls_conn_accept(struct tls_conn *c, uv_stream_t *server, SSL_CTX *ctx,
		    const struct tls_limits *limits, const struct tls_conn_ops *ops);
/* Accepts it but holds the handshake back (nothing is read, no deadline
 * runs, no SSL object exists) until tls_conn_start: admission control, so
 * a reconnect storm costs sockets, not CPU or memory. */
int tls_conn_accept_held(struct tls_conn *c, uv_stream_t *server, SSL_CTX *ctx,
			 const struct tls_limits *limits, const struct tls_conn_ops *ops);
void tls_conn_start(struct tls_conn *c);

/* Client side: connects to addr and verifies that the server's certificate
 * names server_name. The handshake starts in a later loop iteration, so on
 * return c->ssl may still be given a per-connection certificate and key
 * (SSL_use_certificate, SSL_use_PrivateKey) while c->state is TLS_CONNECTING. */
int tls_conn_connect(struct tls_conn *c, uv_loop_t *loop, const struct sockaddr *addr,
		     SSL_CTX *ctx, const char *server_name, const struct tls_limits *limits,
		     const struct tls_conn_ops *ops);

/* As tls_conn_connect, from a chosen local address (bind_addr, port 0: any
 * port): a load generator spreads its connections over 127.0.0.0/8 this way.
 * A bind_addr of NULL is tls_conn_connect. A failed bind closes c with the
 * reason, as a failed connect does. */
int tls_conn_connect_from(struct tls_conn *c, uv_loop_t *loop, const struct sockaddr *addr,
			  const struct sockaddr *bind_addr, SSL_CTX *ctx, const char *server_name,
			  const struct tls_limits *limits, const struct tls_conn_ops *ops);

/* Queues one frame. frame holds FRAME_HEADER bytes, filled in here, followed
 * by len bytes of payload, so the frame leaves as one TLS record without a
 * copy. Returns 0, or negative when the connection is not ready or when this
 * write pushed its queue over write_max (the connection is then closing). */
int tls_conn_send(struct tls_conn *c, uint8_t *frame, size_t len);

/* Server, ready: sends the peer a fresh session ticket (long-lived
 * sessions refresh theirs, so that a restart finds tickets the keys still
 * open). 0, or negative when the context issues none. */
int tls_conn_new_ticket(struct tls_conn *c);

void tls_conn_pause(struct tls_conn *c, unsigned reason);
void tls_conn_resume(struct tls_conn *c, unsigned reason);

/* Closes once: logs "closed: <reason>" at level with the peer, sends a TLS
 * close_notify and what is queued when it can, then closes the handles.
 * ops->close_cb follows. Safe to call from any callback. */
void tls_conn_close(struct tls_conn *c, enum log_level level, const char *fmt, ...)
	LOG_PRINTF(3, 4);

#endif
