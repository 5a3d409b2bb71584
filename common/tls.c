#include "tls.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "util.h"

#define CLOSE_GRACE_MS 2000

struct write_req {
	uv_write_t req;
	size_t len;
	char data[];
};

void tls_limits_default(struct tls_limits *l)
{
	l->max_frame = FRAME_MAX_DEFAULT;
	l->write_high = 1u << 20;
	l->write_low = 256u << 10;
	l->write_max = 8u << 20;
	l->handshake_timeout_ms = 10000;
}

/* The first error on OpenSSL's queue, as text; clears the queue. */
static void ssl_error_text(char *buf, size_t len)
{
	unsigned long e = ERR_peek_error();
	if (e == 0)
		snprintf(buf, len, "no detail from OpenSSL");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
}

int tls_ctx_new(SSL_CTX **out, int server, const struct tls_config *cfg, char *err,
		size_t errlen)
{
	char why[256];
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		ssl_error_text(why, sizeof(why));
		snprintf(err, errlen, "cannot create TLS context: %s", why);
		return -1;
	}
	SSL_CTX_set_min_proto_version(ctx, cfg->allow_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
	/* Idle sessions give their record buffers back. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

	if (util_check_private_file(cfg->key_file, err, errlen) < 0)
		goto fail;
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
		ssl_error_text(why, sizeof(why));
		snprintf(err, errlen, "%s: cannot load certificate: %s", cfg->cert_file, why);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1) {
		ssl_error_text(why, sizeof(why));
		snprintf(err, errlen, "%s: cannot load private key: %s", cfg->key_file, why);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "%s: key does not match certificate %s", cfg->key_file,
			 cfg->cert_file);
		goto fail;
	}
	if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1) {
		ssl_error_text(why, sizeof(why));
		snprintf(err, errlen, "%s: cannot load CA certificate: %s", cfg->ca_file, why);
		goto fail;
	}
	if (cfg->crl_file && cfg->crl_file[0]) {
		X509_STORE *store = SSL_CTX_get_cert_store(ctx);
		X509_LOOKUP *lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
		if (!lookup || X509_load_crl_file(lookup, cfg->crl_file, X509_FILETYPE_PEM) <= 0) {
			ssl_error_text(why, sizeof(why));
			snprintf(err, errlen, "%s: cannot load CRL: %s", cfg->crl_file, why);
			goto fail;
		}
		X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
	}
	if (server) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
		/* Tell clients which CA to pick a certificate for. */
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->ca_file);
		if (names)
			SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"exfleet", 7);
		/* Agents keep one long session and never resume: tickets would
		 * cost a signature-sized message and CPU per handshake. */
		SSL_CTX_set_num_tickets(ctx, 0);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	ERR_clear_error();
	*out = ctx;
	return 0;
fail:
	SSL_CTX_free(ctx);
	return -1;
}

static void conn_set_peer(struct tls_conn *c)
{
	if (c->peer_name[0])
		snprintf(c->peer, sizeof(c->peer), "%s %s", c->peer_name, c->addr);
	else
		snprintf(c->peer, sizeof(c->peer), "%s", c->addr);
}

static void handle_close_cb(uv_handle_t *h)
{
	struct tls_conn *c = h->data;
	if (--c->handles_open > 0)
		return;
	SSL_free(c->ssl); /* frees both BIOs */
	c->ssl = NULL;
	frame_reader_free(&c->frames);
	if (c->ops->close_cb)
		c->ops->close_cb(c);
}

static void conn_close_handles(struct tls_conn *c)
{
	if (!uv_is_closing((uv_handle_t *)&c->tcp))
		uv_close((uv_handle_t *)&c->tcp, handle_close_cb);
	if (!uv_is_closing((uv_handle_t *)&c->timer))
		uv_close((uv_handle_t *)&c->timer, handle_close_cb);
}

static void close_deadline_cb(uv_timer_t *t)
{
	conn_close_handles(t->data);
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
	conn_close_handles(req->data);
}

static void update_reading(struct tls_conn *c);
static void conn_pump(struct tls_conn *c);

static void write_cb(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct tls_conn *c = req->data;
	c->write_queued -= w->len;
	free(w);
	if (status < 0) {
		if (status != UV_ECANCELED)
			tls_conn_close(c, LOG_INFO, "write failed: %s", uv_strerror(status));
		return;
	}
	if ((c->paused & TLS_PAUSE_WRITE) && c->write_queued <= c->limits.write_low)
		tls_conn_resume(c, TLS_PAUSE_WRITE);
	if (c->write_queued == 0 && c->state == TLS_READY && c->ops->drained_cb)
		c->ops->drained_cb(c);
}

/* Moves whatever OpenSSL produced to the socket. */
/* Queues what OpenSSL has produced on the socket: 0, or a libuv error
 * (nothing is queued then). */
static int write_output(struct tls_conn *c)
{
	size_t pending = BIO_ctrl_pending(c->net_out);
	if (pending == 0)
		return 0;
	struct write_req *w = malloc(sizeof(*w) + pending);
	if (!w)
		return UV_ENOMEM;
	int n = BIO_read(c->net_out, w->data, (int)pending);
	w->len = n > 0 ? (size_t)n : 0;
	w->req.data = c;
	uv_buf_t buf = uv_buf_init(w->data, (unsigned)w->len);
	int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, write_cb);
	if (rc < 0) {
		free(w);
		return rc;
	}
	c->write_queued += w->len;
	return 0;
}

/* Moves OpenSSL's output to the socket and applies the queue's marks. */
static int conn_flush(struct tls_conn *c)
{
	int rc = write_output(c);
	if (rc < 0) {
		tls_conn_close(c, LOG_INFO, "write failed: %s", uv_strerror(rc));
		return -1;
	}
	if (c->write_queued > c->limits.write_max) {
		tls_conn_close(c, LOG_WARN, "peer is not reading: %zu bytes queued, limit %zu",
			       c->write_queued, c->limits.write_max);
		return -1;
	}
	if (c->write_queued > c->limits.write_high)
		tls_conn_pause(c, TLS_PAUSE_WRITE);
	return 0;
}

void tls_conn_close(struct tls_conn *c, enum log_level level, const char *fmt, ...)
{
	if (c->state == TLS_CLOSING)
		return;
	enum tls_state was = c->state;
	c->state = TLS_CLOSING;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->close_reason, sizeof(c->close_reason), fmt, ap);
	va_end(ap);
	log_msg(level, c->peer, "closed: %s", c->close_reason);

	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = 0;
	}
	/* Say goodbye properly where we can: close_notify and what is queued
	 * (a Welcome with a refusal, an alert) go out before the socket closes,
	 * bounded by a deadline for peers that do not read. */
	if (was == TLS_READY || was == TLS_HANDSHAKE) {
		if (was == TLS_READY)
			SSL_shutdown(c->ssl);
		ERR_clear_error();
		write_output(c); /* best effort: the socket closes either way */
	}
	if (was != TLS_IDLE && was != TLS_CONNECTING) {
		c->shutdown_req.data = c;
		if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, shutdown_cb) == 0) {
			uv_timer_stop(&c->timer);
			uv_timer_start(&c->timer, close_deadline_cb, CLOSE_GRACE_MS, 0);
			return;
		}
	}
	conn_close_handles(c);
}

static void conn_handshake_failed(struct tls_conn *c)
{
	char why[256];
	long verify = SSL_get_verify_result(c->ssl);
	unsigned long e = ERR_peek_error();
	if (verify != X509_V_OK) {
		snprintf(why, sizeof(why), "certificate rejected: %s",
			 X509_verify_cert_error_string(verify));
		ERR_clear_error();
	} else if (ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST ||
		   ERR_GET_REASON(e) == SSL_R_WRONG_VERSION_NUMBER ||
		   ERR_GET_REASON(e) == SSL_R_UNKNOWN_PROTOCOL) {
		snprintf(why, sizeof(why), "not a TLS client (plaintext or HTTP)");
		ERR_clear_error();
	} else {
		ssl_error_text(why, sizeof(why));
	}
	tls_conn_close(c, LOG_WARN, "TLS handshake failed: %s", why);
}

static void conn_verified(struct tls_conn *c)
{
	X509 *cert = SSL_get0_peer_certificate(c->ssl);
	enum pki_role role;
	if (!cert || pki_cert_identity(cert, c->peer_name, sizeof(c->peer_name), &role) < 0) {
		tls_conn_close(c, LOG_WARN, "peer certificate has no exfleet identity (CN, OU)");
		return;
	}
	c->peer_role = (int)role;
	conn_set_peer(c);
	uv_timer_stop(&c->timer);
	c->state = TLS_READY;
	log_msg(LOG_DEBUG, c->peer, "TLS session established (%s, %s)", SSL_get_version(c->ssl),
		SSL_get_cipher_name(c->ssl));
	if (c->ops->ready_cb)
		c->ops->ready_cb(c);
}

/* Hands whole frames to the owner until it pauses, closes, or input runs out. */
static void conn_read_frames(struct tls_conn *c)
{
	while (c->state == TLS_READY && !(c->paused & TLS_PAUSE_OWNER)) {
		const uint8_t *payload;
		size_t len;
		int rc = frame_reader_next(&c->frames, &payload, &len);
		if (rc < 0) {
			tls_conn_close(c, LOG_WARN, "protocol error: %s (%u bytes, limit %zu)",
				       frame_strerror(rc), c->frames.bad_length, c->frames.max_frame);
			return;
		}
		if (rc == 1) {
			c->frames_in++;
			c->ops->frame_cb(c, payload, len);
			continue;
		}
		uint8_t *space;
		size_t avail;
		if (frame_reader_space(&c->frames, &space, &avail) < 0) {
			tls_conn_close(c, LOG_ERR, "out of memory for an incoming frame");
			return;
		}
		size_t n = 0;
		rc = SSL_read_ex(c->ssl, space, avail, &n);
		if (rc == 1) {
			frame_reader_commit(&c->frames, n);
			continue;
		}
		int err = SSL_get_error(c->ssl, rc);
		if (err == SSL_ERROR_WANT_READ) {
			/* Idle sessions hold no frame buffer: thousands of them
			 * would otherwise keep 16 KiB each. */
			if (frame_reader_pending(&c->frames) == 0)
				frame_reader_free(&c->frames);
			break;
		}
		if (err == SSL_ERROR_ZERO_RETURN) {
			size_t pending = frame_reader_pending(&c->frames);
			if (pending)
				tls_conn_close(c, LOG_WARN, "peer ended the session mid-frame (%zu bytes)",
					       pending);
			else
				tls_conn_close(c, LOG_INFO, "peer ended the session");
			return;
		}
		char why[256];
		ssl_error_text(why, sizeof(why));
		tls_conn_close(c, LOG_WARN, "TLS error: %s", why);
		return;
	}
	/* Reading may have produced output (key updates, tickets). */
	if (c->state == TLS_READY)
		conn_flush(c);
}

static void conn_pump(struct tls_conn *c)
{
	if (c->state == TLS_HANDSHAKE) {
		ERR_clear_error();
		int rc = SSL_do_handshake(c->ssl);
		if (rc == 1) {
			if (conn_flush(c) < 0)
				return;
			conn_verified(c);
		} else {
			int err = SSL_get_error(c->ssl, rc);
			if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
				conn_handshake_failed(c);
				return;
			}
			conn_flush(c);
			return;
		}
	}
	if (c->state == TLS_READY)
		conn_read_frames(c);
}

static _Thread_local char read_buf[65536];

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	/* The bytes go straight into OpenSSL's input BIO, so one buffer per
	 * thread serves every connection. */
	*buf = uv_buf_init(read_buf, sizeof(read_buf));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct tls_conn *c = s->data;
	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread != UV_EOF) {
			tls_conn_close(c, LOG_INFO, "read failed: %s", uv_strerror((int)nread));
		} else if (c->state == TLS_HANDSHAKE) {
			tls_conn_close(c, LOG_WARN, "peer closed the connection during the handshake");
		} else {
			size_t pending = frame_reader_pending(&c->frames);
			if (pending)
				tls_conn_close(c, LOG_WARN,
					       "connection closed mid-frame (%zu bytes pending)", pending);
			else
				tls_conn_close(c, LOG_INFO, "connection closed by peer");
		}
		return;
	}
	if (BIO_write(c->net_in, buf->base, (int)nread) != (int)nread) {
		tls_conn_close(c, LOG_ERR, "out of memory buffering input");
		return;
	}
	conn_pump(c);
}

static void update_reading(struct tls_conn *c)
{
	if (c->state != TLS_HANDSHAKE && c->state != TLS_READY)
		return;
	int want = c->paused == 0;
	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
			c->reading = 1;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = 0;
	}
}

void tls_conn_pause(struct tls_conn *c, unsigned reason)
{
	c->paused |= reason;
	update_reading(c);
}

void tls_conn_resume(struct tls_conn *c, unsigned reason)
{
	c->paused &= ~reason;
	update_reading(c);
	/* Frames may be waiting in OpenSSL or the frame buffer already. */
	if (c->paused == 0 && c->state == TLS_READY)
		conn_read_frames(c);
}

static void handshake_timeout_cb(uv_timer_t *t)
{
	struct tls_conn *c = t->data;
	tls_conn_close(c, LOG_WARN, "TLS handshake timed out after %llu ms",
		       (unsigned long long)c->limits.handshake_timeout_ms);
}

static int conn_init(struct tls_conn *c, uv_loop_t *loop, SSL_CTX *ctx,
		     const struct tls_limits *limits, const struct tls_conn_ops *ops)
{
	void *owner = c->data;
	memset(c, 0, sizeof(*c));
	c->data = owner;
	c->ops = ops;
	c->peer_role = -1;
	if (limits)
		c->limits = *limits;
	else
		tls_limits_default(&c->limits);
	frame_reader_init(&c->frames, c->limits.max_frame);
	c->ssl = SSL_new(ctx);
	c->net_in = BIO_new(BIO_s_mem());
	c->net_out = BIO_new(BIO_s_mem());
	if (!c->ssl || !c->net_in || !c->net_out) {
		SSL_free(c->ssl);
		BIO_free(c->net_in);
		BIO_free(c->net_out);
		c->ssl = NULL;
		return UV_ENOMEM;
	}
	BIO_set_mem_eof_return(c->net_in, -1);
	BIO_set_mem_eof_return(c->net_out, -1);
	SSL_set_bio(c->ssl, c->net_in, c->net_out);
	uv_tcp_init(loop, &c->tcp);
	uv_timer_init(loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->handles_open = 2;
	return 0;
}

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		uv_ip4_name(in, host, sizeof(host));
		port = ntohs(in->sin_port);
		snprintf(out, len, "%s:%d", host, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		uv_ip6_name(in6, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		snprintf(out, len, "[%s]:%d", host, port);
	} else {
		snprintf(out, len, "?");
	}
}

static void conn_start_handshake(struct tls_conn *c)
{
	c->state = TLS_HANDSHAKE;
	uv_timer_start(&c->timer, handshake_timeout_cb, c->limits.handshake_timeout_ms, 0);
	update_reading(c);
}

static int conn_accept(struct tls_conn *c, uv_stream_t *server, SSL_CTX *ctx,
		       const struct tls_limits *limits, const struct tls_conn_ops *ops, int start)
{
	int rc = conn_init(c, server->loop, ctx, limits, ops);
	if (rc < 0)
		return rc;
	rc = uv_accept(server, (uv_stream_t *)&c->tcp);
	if (rc < 0) {
		c->state = TLS_IDLE;
		tls_conn_close(c, LOG_WARN, "accept failed: %s", uv_strerror(rc));
		return 0;
	}
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0)
		format_addr(&ss, c->addr, sizeof(c->addr));
	else
		snprintf(c->addr, sizeof(c->addr), "?");
	conn_set_peer(c);
	uv_tcp_nodelay(&c->tcp, 1);
	SSL_set_accept_state(c->ssl);
	if (start)
		conn_start_handshake(c);
	else
		c->state = TLS_CONNECTING; /* held: closes without a goodbye */
	return 0;
}

int tls_conn_accept(struct tls_conn *c, uv_stream_t *server, SSL_CTX *ctx,
		    const struct tls_limits *limits, const struct tls_conn_ops *ops)
{
	return conn_accept(c, server, ctx, limits, ops, 1);
}

int tls_conn_accept_held(struct tls_conn *c, uv_stream_t *server, SSL_CTX *ctx,
			 const struct tls_limits *limits, const struct tls_conn_ops *ops)
{
	return conn_accept(c, server, ctx, limits, ops, 0);
}

void tls_conn_start(struct tls_conn *c)
{
	if (c->state == TLS_CONNECTING)
		conn_start_handshake(c);
}

static void connect_cb(uv_connect_t *req, int status)
{
	struct tls_conn *c = req->data;
	if (c->state != TLS_CONNECTING)
		return;
	if (status < 0) {
		c->state = TLS_IDLE; /* nothing to flush */
		tls_conn_close(c, LOG_INFO, "cannot connect: %s", uv_strerror(status));
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	conn_start_handshake(c);
	conn_pump(c);
}

int tls_conn_connect_from(struct tls_conn *c, uv_loop_t *loop, const struct sockaddr *addr,
			  const struct sockaddr *bind_addr, SSL_CTX *ctx, const char *server_name,
			  const struct tls_limits *limits, const struct tls_conn_ops *ops)
{
	int rc = conn_init(c, loop, ctx, limits, ops);
	if (rc < 0)
		return rc;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, addr, addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						      : sizeof(struct sockaddr_in));
	format_addr(&ss, c->addr, sizeof(c->addr));
	conn_set_peer(c);
	SSL_set_connect_state(c->ssl);
	/* The collector's certificate must name the host we meant to reach. */
	if (SSL_set1_host(c->ssl, server_name) != 1 ||
	    SSL_set_tlsext_host_name(c->ssl, server_name) != 1) {
		ERR_clear_error();
		c->state = TLS_IDLE;
		tls_conn_close(c, LOG_ERR, "invalid server name '%s'", server_name);
		return 0;
	}
	if (bind_addr) {
		rc = uv_tcp_bind(&c->tcp, bind_addr, 0);
		if (rc < 0) {
			c->state = TLS_IDLE;
			tls_conn_close(c, LOG_INFO,
				       "cannot connect: cannot bind the source address: %s",
				       uv_strerror(rc));
			return 0;
		}
	}
	c->state = TLS_CONNECTING;
	c->connect_req.data = c;
	rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, connect_cb);
	if (rc < 0) {
		c->state = TLS_IDLE;
		tls_conn_close(c, LOG_INFO, "cannot connect: %s", uv_strerror(rc));
	}
	return 0;
}

int tls_conn_connect(struct tls_conn *c, uv_loop_t *loop, const struct sockaddr *addr,
		     SSL_CTX *ctx, const char *server_name, const struct tls_limits *limits,
		     const struct tls_conn_ops *ops)
{
	return tls_conn_connect_from(c, loop, addr, NULL, ctx, server_name, limits, ops);
}

int tls_conn_send(struct tls_conn *c, uint8_t *frame, size_t len)
{
	if (c->state != TLS_READY)
		return UV_ENOTCONN;
	if (len == 0 || len > c->limits.max_frame)
		return UV_EMSGSIZE;
	frame_put_header(frame, (uint32_t)len);
	ERR_clear_error();
	size_t written = 0;
	if (SSL_write_ex(c->ssl, frame, FRAME_HEADER + len, &written) != 1) {
		char why[256];
		ssl_error_text(why, sizeof(why));
		tls_conn_close(c, LOG_WARN, "TLS write failed: %s", why);
		return UV_EPIPE;
	}
	c->frames_out++;
	return conn_flush(c) < 0 ? UV_EPIPE : 0;
}
