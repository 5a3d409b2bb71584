/* The HTTPS API's server: the listener, TLS and the caller's identity,
 * h2o's configuration, routing, errors, request logging and shutdown. The
 * endpoints themselves are in api_fleet.c, api_commands.c, api_metrics.c. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include <h2o.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <protobuf-c/protobuf-c.h>

#include "api_internal.h"
#include "log.h"
#include "pki.h"
#include "signin.h"
#include "tls.h"
#include "util.h"

#define PAGE_DEFAULT 100
#define ACCEPT_LOG_INTERVAL_MS 10000

/* One client connection. h2o owns the socket; this follows it so that a
 * request can be traced back to the certificate its connection presented. */
struct api_conn {
	uv_tcp_t tcp;              /* first: h2o's close callback hands this back */
	struct api *api;
	h2o_socket_t *sock;
	int has_cert;              /* the client presented a verified certificate */
	struct api_identity who;
	struct api_identity last;  /* the caller of its latest request, for the log */
	char refused[96];          /* whose certificate failed to verify, for the log */
	char addr[64];
	struct api_conn *prev, *next;
};

struct api_handler {
	h2o_handler_t super;
	struct api *api;
};

struct api_filter {
	h2o_filter_t super;
	struct api *api;
};

struct api_logger {
	h2o_logger_t super;
	struct api *api;
};

struct api {
	uv_loop_t *loop;
	struct api_config cfg;     /* its strings are not kept: NULL */
	SSL_CTX *tls;
	struct store_query *store;
	struct signin *signin;     /* dashboard sign-in links and sessions */
	h2o_globalconf_t h2o;
	h2o_context_t ctx;
	h2o_accept_ctx_t accept;
	int h2o_ready;             /* config and context initialised */
	uv_tcp_t listener;
	uv_timer_t dispose_timer;
	char bound[80];
	int port;
	struct api_conn *conns;
	unsigned nconns;
	uint64_t shed, emfile;
	int64_t last_accept_log_ms;
	int stopping, listener_closed, disposing;
	void (*done)(void *arg);
	void *done_arg;
};

static const struct api_identity nobody;

void api_config_default(struct api_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->listen = "127.0.0.1:8443";
	cfg->heartbeat_ms = 30000;
	cfg->max_body = 1u << 20;
	cfg->page_max = 500;
	cfg->max_connections = 256;
	cfg->query_budget_ms = 1000;
	cfg->signin_ttl_ms = 5 * 60 * 1000;
	cfg->session_ttl_ms = 8 * 3600 * 1000;
}

const struct api_config *api_cfg(const struct api *a)
{
	return &a->cfg;
}

struct store_query *api_store(const struct api *a)
{
	return a->store;
}

struct signin *api_signin(const struct api *a)
{
	return a->signin;
}

const char *api_address(const struct api *a)
{
	return a->bound;
}

int api_port(const struct api *a)
{
	return a->port;
}

void api_clock(const struct api *a, struct store_clock *clock)
{
	clock->now_ms = util_now_ms();
	clock->heartbeat_ms = a->cfg.heartbeat_ms;
}

/* ---- connections and who is on them ---- */

static struct api_conn *conn_of(struct api *a, const h2o_socket_t *sock)
{
	for (struct api_conn *c = a->conns; c; c = c->next)
		if (c->sock == sock)
			return c;
	return NULL;
}

/* h2o keeps each connection's SSL to itself, but its BIO carries h2o's
 * socket (h2o's own OpenSSL callbacks find the socket the same way), and
 * the socket leads to the connection here. A socket this API did not
 * accept would find none and keep no identity: its requests get 401. */

/* A certificate that does not verify fails the handshake; the client
 * sees only an alert, so the log says why and whose it was. The name is
 * unverified, but pki_cert_identity admits only plain names. */
static int tls_verify_cb(int ok, X509_STORE_CTX *store)
{
	if (ok)
		return 1;
	SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct api *a = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	struct api_conn *c = conn_of(a, BIO_get_data(SSL_get_rbio(ssl)));
	X509 *leaf = X509_STORE_CTX_get0_cert(store);
	char name[PKI_NAME_MAX + 1];
	enum pki_role role;
	if (c && leaf && pki_cert_identity(leaf, name, sizeof(name), &role) == 0)
		snprintf(c->refused, sizeof(c->refused), " (%s %s)", pki_role_name(role), name);
	return 0;
}

static void tls_refused(const SSL *ssl, const struct api_conn *c, int alert)
{
	long verify = SSL_get_verify_result(ssl);
	log_msg(LOG_WARN, c ? c->addr : NULL, "api: TLS handshake refused: %s%s%s%s",
		SSL_alert_desc_string_long(alert), verify != X509_V_OK ? ": " : "",
		verify != X509_V_OK ? X509_verify_cert_error_string(verify) : "",
		c ? c->refused : "");
}

/* The handshake is done: the certificate's identity is the connection's,
 * for all its requests. Or it failed on our side: log why. */
static void tls_info_cb(const SSL *ssl, int where, int ret)
{
	int refused = (where & SSL_CB_WRITE_ALERT) == SSL_CB_WRITE_ALERT &&
		      SSL_alert_type_string(ret)[0] == 'F';
	if (!(where & SSL_CB_HANDSHAKE_DONE) && !refused)
		return;
	struct api *a = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	struct api_conn *c = conn_of(a, BIO_get_data(SSL_get_rbio(ssl)));
	if (refused) {
		tls_refused(ssl, c, ret);
		return;
	}
	if (!c)
		return;
	memset(&c->who, 0, sizeof(c->who));
	c->has_cert = 0;
	X509 *cert = SSL_get0_peer_certificate(ssl);
	if (!cert || SSL_get_verify_result(ssl) != X509_V_OK)
		return;
	c->has_cert = 1;
	enum pki_role role;
	if (pki_cert_identity(cert, c->who.name, sizeof(c->who.name), &role) == 0) {
		c->who.authenticated = 1;
		c->who.role = (int)role;
	}
}

static void maybe_stopped(struct api *a);

static void conn_free_cb(uv_handle_t *h)
{
	free(h); /* a connection refused before h2o had it */
}

static void conn_closed_cb(uv_handle_t *h)
{
	struct api_conn *c = (struct api_conn *)h;
	struct api *a = c->api;
	if (c->prev)
		c->prev->next = c->next;
	else
		a->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	a->nconns--;
	free(c);
	maybe_stopped(a);
}

static void accept_trouble(struct api *a, const char *what)
{
	int64_t now = util_now_ms();
	if (now - a->last_accept_log_ms < ACCEPT_LOG_INTERVAL_MS)
		return;
	a->last_accept_log_ms = now;
	log_warn("api: %s (%llu refused for want of descriptors, %llu over max_connections so "
		 "far; %u open)",
		 what, (unsigned long long)a->emfile, (unsigned long long)a->shed, a->nconns);
}

static void on_connection(uv_stream_t *listener, int status)
{
	struct api *a = listener->data;
	if (status < 0) {
		a->emfile += status == UV_EMFILE || status == UV_ENFILE;
		accept_trouble(a, uv_strerror(status));
		return;
	}
	struct api_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		log_err("api: accept: out of memory");
		return;
	}
	c->api = a;
	uv_tcp_init(a->loop, &c->tcp);
	if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
		uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
		return;
	}
	if (a->nconns >= a->cfg.max_connections) {
		a->shed++;
		accept_trouble(a, "too many connections: raise [api] max_connections");
		uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
		return;
	}
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	char host[64] = "?";
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
		uv_ip_name((struct sockaddr *)&ss, host, sizeof(host));
	snprintf(c->addr, sizeof(c->addr), "%s", host);
	uv_tcp_nodelay(&c->tcp, 1);
	c->next = a->conns;
	if (a->conns)
		a->conns->prev = c;
	a->conns = c;
	a->nconns++;
	c->sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, conn_closed_cb);
	h2o_accept(&a->accept, c->sock);
}

/* ---- responses ---- */

static const char *reason_phrase(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 303: return "See Other";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	default: return "Error";
	}
}

int api_send_text(struct api_request *r, int status, const char *content_type, const char *text,
		  size_t len)
{
	h2o_req_t *req = r->req;
	req->res.status = status;
	req->res.reason = reason_phrase(status);
	req->res.content_length = len;
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
		       strlen(content_type));
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
		       H2O_STRLIT("no-store"));
	h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"),
			      0, NULL, H2O_STRLIT("nosniff"));
	h2o_send_inline(req, text, len);
	return 0;
}

void api_add_header(struct api_request *r, const char *name, const char *value)
{
	h2o_req_t *req = r->req;
	h2o_iovec_t n = h2o_strdup(&req->pool, name, SIZE_MAX);
	h2o_iovec_t v = h2o_strdup(&req->pool, value, SIZE_MAX);
	h2o_add_header_by_str(&req->pool, &req->res.headers, n.base, n.len, 1, NULL, v.base, v.len);
}

int api_send_html(struct api_request *r, int status, const char *html, size_t len)
{
	api_add_header(r, "content-security-policy",
		       "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
		       "base-uri 'none'; form-action 'none'");
	api_add_header(r, "x-frame-options", "DENY");
	api_add_header(r, "referrer-policy", "no-referrer");
	return api_send_text(r, status, "text/html; charset=utf-8", html, len);
}

static json_t *error_body(const char *code, const char *message)
{
	return json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message);
}

int api_send_json(struct api_request *r, int status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (!text) {
		static const char oom[] =
			"{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}\n";
		return api_send_text(r, 500, "application/json", oom, sizeof(oom) - 1);
	}
	/* A final newline for people reading with curl; h2o copies the body. */
	size_t len = strlen(text);
	char *line = realloc(text, len + 2);
	if (line) {
		text = line;
		text[len++] = '\n';
		text[len] = '\0';
	}
	api_send_text(r, status, "application/json", text, len);
	free(text);
	return 0;
}

int api_error(struct api_request *r, int status, const char *code, const char *fmt, ...)
{
	char message[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	return api_send_json(r, status, error_body(code, message));
}

int api_refuse(struct api_request *r, int status, const char *code, const char *fmt, ...)
{
	char message[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	api_send_json(r, status, error_body(code, message));
	return -1;
}

int api_store_error(struct api_request *r, int rc, const char *err)
{
	if (rc == UV_ETIMEDOUT)
		return api_error(r, 503, "query_too_slow",
				 "%s; narrow the request (host=, since=, a smaller limit=)", err);
	log_err("api: store: %s", err);
	return api_error(r, 503, "store_unavailable",
			 "the store cannot be read now; the collector's log says why");
}

/* h2o answers some errors itself (an oversize or broken body, for one) in
 * text; this filter rewrites those as the API's JSON errors. */
struct json_error_ostream {
	h2o_ostream_t super;
	struct api *api;
};

static const char *error_code(int status)
{
	switch (status) {
	case 400: return "bad_request";
	case 404: return "not_found";
	case 405: return "method_not_allowed";
	case 413: return "body_too_large";
	case 417: return "expectation_failed";
	case 503: return "unavailable";
	default: return status >= 500 ? "internal" : "error";
	}
}

static void json_error_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n,
			    h2o_send_state_t state)
{
	struct json_error_ostream *o = (struct json_error_ostream *)self;
	if (h2o_send_state_is_in_progress(state)) {
		h2o_ostream_send_next(self, req, NULL, 0, state);
		return;
	}
	/* h2o's text, one short line, becomes the message. */
	char text[256] = "";
	size_t used = 0;
	for (size_t i = 0; i < n && used + 1 < sizeof(text); i++) {
		size_t take = bufs[i].len < sizeof(text) - 1 - used ? bufs[i].len
								    : sizeof(text) - 1 - used;
		memcpy(text + used, bufs[i].base, take);
		used += take;
	}
	text[used] = '\0';
	text[strcspn(text, "\r\n")] = '\0';
	char message[300];
	if (req->res.status == 413)
		snprintf(message, sizeof(message), "body: larger than %zu bytes, the API's limit",
			 o->api->cfg.max_body);
	else
		snprintf(message, sizeof(message), "request: %s",
			 text[0] ? text : req->res.reason ? req->res.reason : "refused");
	json_t *body = error_body(error_code(req->res.status), message);
	char *json = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	h2o_iovec_t out = {NULL, 0};
	if (json) {
		out = h2o_strdup(&req->pool, json, SIZE_MAX);
		free(json);
	}
	/* The headers leave with the first bytes, after this. */
	req->res.content_length = out.len;
	if (h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD")))
		h2o_ostream_send_next(self, req, NULL, 0, state);
	else
		h2o_ostream_send_next(self, req, &out, 1, state);
}

static void json_errors_setup(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
	ssize_t i = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
	int json = i >= 0 && req->res.headers.entries[i].value.len >= 16 &&
		   memcmp(req->res.headers.entries[i].value.base, "application/json", 16) == 0;
	int page = i >= 0 && req->res.headers.entries[i].value.len >= 9 &&
		   memcmp(req->res.headers.entries[i].value.base, "text/html", 9) == 0;
	if (req->res.status < 400 || json || page) {
		h2o_setup_next_ostream(req, slot);
		return;
	}
	h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
		       H2O_STRLIT("application/json"), 1);
	struct json_error_ostream *o = (void *)h2o_add_ostream(req, sizeof(*o), slot);
	o->super.do_send = json_error_send;
	o->api = ((struct api_filter *)self)->api;
	h2o_setup_next_ostream(req, &o->super.next);
}

/* ---- one line per request ---- */

static void log_access(h2o_logger_t *self, h2o_req_t *req)
{
	struct api *a = ((struct api_logger *)self)->api;
	struct api_conn *c = conn_of(a, req->conn->callbacks->get_socket(req->conn));
	struct timeval now, begin = req->timestamps.request_begin_at;
	gettimeofday(&now, NULL);
	if (begin.tv_sec == 0)
		begin = req->processed_at.at;
	int64_t us = ((int64_t)now.tv_sec - begin.tv_sec) * 1000000 +
		     (now.tv_usec - begin.tv_usec);
	const struct api_identity *who = c ? &c->last : &nobody;
	char role[48];
	snprintf(role, sizeof(role), "%s%s",
		 who->authenticated ? pki_role_name((enum pki_role)who->role)
		 : c && c->has_cert ? "no exfleet identity"
				    : "no certificate",
		 who->via_session ? ", dashboard" : "");
	/* The path without its query: a later sign-in link carries a token there. */
	size_t path_len = req->input.query_at != SIZE_MAX ? req->input.query_at
							   : req->input.path.len;
	char status[8] = "-";
	if (req->res.status)
		snprintf(status, sizeof(status), "%d", req->res.status);
	log_msg(LOG_INFO, c ? c->addr : NULL, "api: %s (%s) %.*s %.*s %s %.1f ms",
		who->authenticated ? who->name : "-", role,
		(int)(req->input.method.len > 16 ? 16 : req->input.method.len),
		req->input.method.base, (int)(path_len > 200 ? 200 : path_len),
		req->input.path.base, status, (double)us / 1000);
}

/* ---- requests ---- */

/* Who may use a route: anyone (the dashboard's files, sign-in, health);
 * viewers and operators, by certificate or dashboard session, with POST
 * for operators' certificates only; or certificates only. */
enum access { ACCESS_PUBLIC, ACCESS_READ, ACCESS_CERT };

struct route {
	const char *path;
	int with_id;        /* path "/" {id} [suffix] */
	const char *suffix; /* after {id}, or NULL */
	enum access access;
	int (*get)(struct api_request *r);
	int (*post)(struct api_request *r);
};

static const struct route routes[] = {
	{"/", 0, NULL, ACCESS_PUBLIC, api_get_asset, NULL},
	{"/dashboard", 1, NULL, ACCESS_PUBLIC, api_get_asset, NULL},
	{"/signin", 0, NULL, ACCESS_PUBLIC, api_get_signin, NULL},
	{"/signout", 0, NULL, ACCESS_PUBLIC, NULL, api_post_signout},
	{"/healthz", 0, NULL, ACCESS_PUBLIC, api_get_healthz, NULL},
	{"/metrics", 0, NULL, ACCESS_READ, api_get_metrics, NULL},
	{"/api/v1/summary", 0, NULL, ACCESS_READ, api_get_summary, NULL},
	{"/api/v1/hosts", 0, NULL, ACCESS_READ, api_get_hosts, NULL},
	{"/api/v1/hosts", 1, NULL, ACCESS_READ, api_get_host, NULL},
	{"/api/v1/hosts", 1, "/sealing", ACCESS_READ, api_get_sealing, NULL},
	{"/api/v1/events", 0, NULL, ACCESS_READ, api_get_events, NULL},
	{"/api/v1/waves", 0, NULL, ACCESS_READ, api_get_waves, api_post_waves},
	{"/api/v1/waves/report", 0, NULL, ACCESS_READ, api_get_report, NULL},
	{"/api/v1/commands", 0, NULL, ACCESS_READ, api_get_commands, api_post_commands},
	{"/api/v1/commands", 1, NULL, ACCESS_READ, api_get_command, NULL},
	{"/api/v1/audit", 0, NULL, ACCESS_READ, api_get_audit, NULL},
	{"/api/v1/audit/verify", 0, NULL, ACCESS_READ, api_get_audit_verify, NULL},
	{"/api/v1/signin-links", 0, NULL, ACCESS_CERT, NULL, api_post_signin_links},
};

static const struct route *route_of(h2o_iovec_t path, h2o_iovec_t *id)
{
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		const struct route *rt = &routes[i];
		size_t n = strlen(rt->path);
		if (path.len < n || memcmp(path.base, rt->path, n) != 0)
			continue;
		if (!rt->with_id) {
			if (path.len == n)
				return rt;
			continue;
		}
		/* rt->path "/" {id} rt->suffix, the id without a '/' */
		size_t tail = rt->suffix ? strlen(rt->suffix) : 0;
		if (path.len <= n + 1 + tail || path.base[n] != '/')
			continue;
		const char *from = path.base + n + 1;
		size_t len = path.len - n - 1 - tail;
		if (tail && memcmp(from + len, rt->suffix, tail) != 0)
			continue;
		if (memchr(from, '/', len))
			continue;
		*id = h2o_iovec_init(from, len);
		return rt;
	}
	return NULL;
}

static int unhex(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
}

/* A query component, percent-decoded ('+' is a space) into the pool;
 * NULL when an escape is broken or decodes to NUL. */
static const char *query_decode(h2o_mem_pool_t *pool, const char *s, size_t len)
{
	char *out = h2o_mem_alloc_pool(pool, len + 1);
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '+') {
			out[n++] = ' ';
		} else if (s[i] != '%') {
			out[n++] = s[i];
		} else {
			int hi = i + 2 < len ? unhex(s[i + 1]) : -1;
			int lo = i + 2 < len ? unhex(s[i + 2]) : -1;
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return NULL;
			out[n++] = (char)(hi << 4 | lo);
			i += 2;
		}
	}
	out[n] = '\0';
	return out;
}

/* Splits the query into r->params: 0, or -1 once it has answered 400. */
static int parse_query(struct api_request *r)
{
	h2o_req_t *req = r->req;
	if (req->query_at == SIZE_MAX)
		return 0;
	const char *p = req->path.base + req->query_at + 1;
	const char *end = req->path.base + req->path.len;
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		if (stop > p) {
			const char *eq = memchr(p, '=', (size_t)(stop - p));
			size_t name_len = (size_t)((eq ? eq : stop) - p);
			const char *name = query_decode(&req->pool, p, name_len);
			const char *value = eq ? query_decode(&req->pool, eq + 1,
							      (size_t)(stop - eq - 1))
					       : "";
			if (!name || !value)
				return api_refuse(r, 400, "invalid_parameter",
						  "query: '%.*s' has a broken %%-escape",
						  (int)(stop - p > 100 ? 100 : stop - p), p);
			if (api_param(r, name))
				return api_refuse(r, 400, "invalid_parameter",
						  "%.64s: given more than once", name);
			if (r->nparams == API_PARAMS_MAX)
				return api_refuse(r, 400, "invalid_parameter",
						  "query: more than %d parameters", API_PARAMS_MAX);
			r->params[r->nparams++] = (struct api_param){name, value};
		}
		p = stop + 1;
	}
	return 0;
}

/* Whether the caller may use route with this method: 0, or -1 once it has
 * answered 401 or 403. */
static int authorize(struct api_request *r, const struct route *route, int post)
{
	const struct api_identity *who = r->who;
	if (!who->authenticated && !r->has_cert)
		return api_refuse(r, 401, "unauthenticated",
				  "a client certificate is required: present a viewer or operator "
				  "certificate from the deployment's CA (exfleetctl pki issue "
				  "operator NAME --role viewer|operator); browsers sign in with a "
				  "link from exfleetctl dashboard");
	if (!who->authenticated)
		return api_refuse(r, 403, "forbidden",
				  "the client certificate carries no exfleet name and role");
	if (who->role != PKI_ROLE_VIEWER && who->role != PKI_ROLE_OPERATOR)
		return api_refuse(r, 403, "forbidden",
				  "certificate '%s' has role %s; the API serves viewer and "
				  "operator certificates",
				  who->name, pki_role_name((enum pki_role)who->role));
	if (who->via_session && (post || (route && route->access == ACCESS_CERT)))
		return api_refuse(r, 403, "forbidden",
				  "the dashboard only reads; this needs a client certificate "
				  "(exfleetctl signs and submits commands)");
	if (post && route->access == ACCESS_READ && who->role != PKI_ROLE_OPERATOR)
		return api_refuse(r, 403, "forbidden",
				  "'%s' has role %s, which may only read; this needs an operator "
				  "certificate",
				  who->name, pki_role_name((enum pki_role)who->role));
	return 0;
}

/* The caller: the connection's certificate, else a dashboard session's
 * cookie, else nobody. */
static void identify(struct api_request *r, const struct api_conn *c, struct api_identity *who)
{
	memset(who, 0, sizeof(*who));
	r->who = who;
	if (c && c->has_cert) {
		*who = c->who;
		r->has_cert = 1;
		return;
	}
	const char *key = api_cookie(r, API_SESSION_COOKIE);
	struct signin_identity s;
	if (!key || signin_session(r->api->signin, key, util_now_ms(), &s) < 0)
		return;
	who->authenticated = 1;
	who->via_session = 1;
	who->role = s.role;
	snprintf(who->name, sizeof(who->name), "%s", s.name);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
	struct api *a = ((struct api_handler *)self)->api;
	struct api_conn *c = conn_of(a, req->conn->callbacks->get_socket(req->conn));
	struct api_identity who;
	struct api_request r = {.api = a, .req = req};
	identify(&r, c, &who);
	if (c)
		c->last = who; /* for the request log */
	h2o_iovec_t id = {NULL, 0};
	const struct route *route = route_of(req->path_normalized, &id);
	int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
		  h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
	int post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));

	/* Who asks comes first: without a certificate nothing, not even
	 * which paths exist, is told. */
	if ((!route || route->access != ACCESS_PUBLIC) && authorize(&r, route, 0) < 0)
		return 0;
	if (!route)
		return api_error(&r, 404, "not_found", "no such resource: %.*s",
				 (int)(req->path_normalized.len > 200 ? 200
								      : req->path_normalized.len),
				 req->path_normalized.base);
	if (!(get && route->get) && !(post && route->post)) {
		const char *allow = !route->post  ? "GET, HEAD"
				    : !route->get ? "POST"
						  : "GET, HEAD, POST";
		h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow,
			       strlen(allow));
		return api_error(&r, 405, "method_not_allowed", "%.*s is not allowed here; use %s",
				 (int)(req->method.len > 16 ? 16 : req->method.len),
				 req->method.base, allow);
	}
	if (post && route->access != ACCESS_PUBLIC && authorize(&r, route, 1) < 0)
		return 0;
	r.path = h2o_strdup(&req->pool, req->path_normalized.base, req->path_normalized.len).base;
	if (id.base)
		r.id = h2o_strdup(&req->pool, id.base, id.len).base;
	if (parse_query(&r) < 0)
		return 0;
	r.body = req->entity.base;
	r.body_len = req->entity.base ? req->entity.len : 0;
	ssize_t ct = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
	if (ct >= 0)
		r.content_type = h2o_strdup(&req->pool, req->headers.entries[ct].value.base,
					    req->headers.entries[ct].value.len)
					 .base;
	return post ? route->post(&r) : route->get(&r);
}

const char *api_cookie(const struct api_request *r, const char *name)
{
	h2o_req_t *req = r->req;
	size_t want = strlen(name);
	for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_COOKIE, i)) >= 0;) {
		const char *p = req->headers.entries[i].value.base;
		const char *end = p + req->headers.entries[i].value.len;
		while (p < end) {
			while (p < end && (*p == ' ' || *p == ';'))
				p++;
			const char *stop = memchr(p, ';', (size_t)(end - p));
			if (!stop)
				stop = end;
			if ((size_t)(stop - p) > want && memcmp(p, name, want) == 0 &&
			    p[want] == '=')
				return h2o_strdup(&req->pool, p + want + 1,
						  (size_t)(stop - p - want - 1))
					.base;
			p = stop;
		}
	}
	return NULL;
}

/* ---- what the resources share ---- */

const char *api_param(const struct api_request *r, const char *name)
{
	for (size_t i = 0; i < r->nparams; i++)
		if (strcmp(r->params[i].name, name) == 0)
			return r->params[i].value;
	return NULL;
}

int api_params_only(struct api_request *r, const char *const *allowed)
{
	for (size_t i = 0; i < r->nparams; i++) {
		int known = 0;
		for (const char *const *k = allowed; *k && !known; k++)
			known = strcmp(*k, r->params[i].name) == 0;
		if (known)
			continue;
		char list[256] = "";
		size_t used = 0;
		for (const char *const *k = allowed; *k && used < sizeof(list); k++)
			used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s",
						 k == allowed ? "" : ", ", *k);
		if (allowed[0])
			return api_refuse(r, 400, "unknown_parameter",
					  "%.64s: unknown query parameter; this endpoint takes %s",
					  r->params[i].name, list);
		return api_refuse(r, 400, "unknown_parameter",
				  "%.64s: unknown query parameter; this endpoint takes none",
				  r->params[i].name);
	}
	return 0;
}

/* A whole decimal integer, optionally signed: 0 or -1. */
static int parse_int(const char *s, int64_t *v)
{
	const char *p = s + (*s == '-');
	if (!*p || strspn(p, "0123456789") != strlen(p) || strlen(p) > 18)
		return -1;
	*v = strtoll(s, NULL, 10);
	return 0;
}

int api_param_int(struct api_request *r, const char *name, int64_t min, int64_t max,
		  int64_t *value, int *set)
{
	const char *text = api_param(r, name);
	*set = text != NULL;
	if (!text)
		return 0;
	if (parse_int(text, value) < 0 || *value < min || *value > max)
		return api_refuse(r, 400, "invalid_parameter",
				  "%s: '%.64s' is not a whole number from %lld to %lld", name, text,
				  (long long)min, (long long)max);
	return 0;
}

int api_page(struct api_request *r, struct store_page *p)
{
	int64_t max = r->api->cfg.page_max, limit, offset;
	int set;
	p->limit = PAGE_DEFAULT < max ? PAGE_DEFAULT : max;
	p->offset = 0;
	if (api_param_int(r, "limit", 1, max, &limit, &set) < 0)
		return -1;
	if (set)
		p->limit = limit;
	/* Beyond any table's size, and far from overflowing offset + limit. */
	if (api_param_int(r, "offset", 0, (int64_t)1 << 50, &offset, &set) < 0)
		return -1;
	if (set)
		p->offset = offset;
	return 0;
}

int api_send_page(struct api_request *r, json_t *items, int64_t total, const struct store_page *p)
{
	int64_t next = p->offset + p->limit;
	json_t *body = json_pack("{s:o, s:I, s:I, s:I, s:o}", "items", items, "total",
				 (json_int_t)total, "limit", (json_int_t)p->limit, "offset",
				 (json_int_t)p->offset, "next",
				 next < total ? json_integer(next) : json_null());
	return api_send_json(r, 200, body);
}

int api_parse_time(const char *text, int64_t *ms)
{
	int64_t v;
	if (parse_int(text, &v) == 0) {
		if (v < 0)
			return -1;
		*ms = v;
		return 0;
	}
	int y, mo, d, h = 0, mi = 0, s = 0, frac = 0, n = 0;
	size_t len = strlen(text);
	if (len == 10) {
		if (sscanf(text, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
			return -1;
	} else if (len == 20 || len == 24) {
		if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &n) != 6 ||
		    n != 19)
			return -1;
		if (len == 24 && (text[19] != '.' || strspn(text + 20, "0123456789") != 3))
			return -1;
		if (len == 24)
			frac = atoi(text + 20);
		if (text[len - 1] != 'Z')
			return -1;
	} else {
		return -1;
	}
	if (strspn(text, "0123456789-:TZ.") != len)
		return -1;
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
			.tm_min = mi, .tm_sec = s};
	time_t t = timegm(&tm);
	/* timegm normalises 2026-02-30 to March: a date that moved was not one. */
	if (t == (time_t)-1 || tm.tm_year != y - 1900 || tm.tm_mon != mo - 1 || tm.tm_mday != d ||
	    tm.tm_hour != h || tm.tm_min != mi || tm.tm_sec != s || t < 0)
		return -1;
	*ms = (int64_t)t * 1000 + frac;
	return 0;
}

int api_param_time(struct api_request *r, const char *name, int64_t *ms, int *set)
{
	const char *text = api_param(r, name);
	*set = text != NULL;
	if (text && api_parse_time(text, ms) < 0)
		return api_refuse(r, 400, "invalid_parameter",
				  "%s: '%.64s' is not a time; give milliseconds since 1970 or "
				  "ISO-8601 UTC like 2026-11-29T10:02:11Z",
				  name, text);
	return 0;
}

void api_enum_name(json_t *o, const char *key, const ProtobufCEnumDescriptor *desc)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_integer(v))
		return;
	json_int_t n = json_integer_value(v);
	if (n < INT32_MIN || n > INT32_MAX)
		return;
	const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(desc, (int)n);
	if (e)
		json_object_set_new(o, key, json_string(e->name));
}

void api_bool(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (json_is_integer(v))
		json_object_set_new(o, key, json_boolean(json_integer_value(v) != 0));
}

/* ---- start and stop ---- */

static int listen_on(struct api *a, const char *listen, char *err, size_t errlen)
{
	char host[256], port[8];
	if (util_split_hostport(listen, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(err, errlen, "[api] listen: '%s' is not host:port", listen);
		return UV_EINVAL;
	}
	struct sockaddr_storage ss;
	int rc = strchr(host, ':') ? uv_ip6_addr(host, atoi(port), (struct sockaddr_in6 *)&ss)
				   : uv_ip4_addr(host, atoi(port), (struct sockaddr_in *)&ss);
	if (rc < 0) {
		snprintf(err, errlen, "[api] listen: '%s' is not an IP address", host);
		return rc;
	}
	uv_tcp_init(a->loop, &a->listener);
	a->listener.data = a;
	rc = uv_tcp_bind(&a->listener, (struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&a->listener, 128, on_connection);
	if (rc < 0) {
		snprintf(err, errlen, "[api] listen: cannot listen on %s: %s", listen,
			 uv_strerror(rc));
		return rc;
	}
	int sslen = sizeof(ss);
	uv_tcp_getsockname(&a->listener, (struct sockaddr *)&ss, &sslen);
	uv_ip_name((struct sockaddr *)&ss, host, sizeof(host));
	a->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	snprintf(a->bound, sizeof(a->bound), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
		 a->port);
	return 0;
}

static int tls_setup(struct api *a, const struct api_config *cfg, char *err, size_t errlen)
{
	/* TLS 1.3 only (allow_tls12 unset): operators' tools all speak it. */
	struct tls_config tc = {.ca_file = cfg->ca_file,
				.cert_file = cfg->cert_file,
				.key_file = cfg->key_file,
				.crl_file = cfg->crl_file};
	char why[512];
	if (tls_ctx_new(&a->tls, 1, &tc, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "[api] %s", why);
		return UV_EINVAL;
	}
	/* A certificate is asked for but not required by TLS, so that a
	 * client without one is told so in a JSON 401 rather than a TLS alert;
	 * one that is presented must still chain to the CA and not be revoked. */
	SSL_CTX_set_verify(a->tls, SSL_VERIFY_PEER, tls_verify_cb);
	/* No resumption: every connection's certificate meets the current CRL,
	 * and h2o 2.2 takes a server write during a read for renegotiation. */
	SSL_CTX_set_num_tickets(a->tls, 0);
	SSL_CTX_set_session_cache_mode(a->tls, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_app_data(a->tls, a);
	SSL_CTX_set_info_callback(a->tls, tls_info_cb);
	/* HTTP/1.1 only (no ALPN "h2"): one request per connection at a time
	 * bounds buffered bodies at max_connections x max_body, and h2o's
	 * HTTP/2 resets an oversize upload where HTTP/1.1 gets a JSON 413. */
	return 0;
}

static void h2o_setup(struct api *a)
{
	h2o_config_init(&a->h2o);
	a->h2o.server_name = h2o_iovec_init(H2O_STRLIT("exfleet-collector"));
	a->h2o.max_request_entity_size = a->cfg.max_body;
	h2o_hostconf_t *host =
		h2o_config_register_host(&a->h2o, h2o_iovec_init(H2O_STRLIT("default")), 65535);
	h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
	struct api_handler *handler = (void *)h2o_create_handler(path, sizeof(*handler));
	handler->super.on_req = on_req;
	handler->api = a;
	/* Errors h2o sends before a path is chosen go through the host's
	 * fallback path: it gets the same filter and logger. */
	h2o_pathconf_t *paths[] = {path, &host->fallback_path};
	for (size_t i = 0; i < 2; i++) {
		struct api_filter *f = (void *)h2o_create_filter(paths[i], sizeof(*f));
		f->super.on_setup_ostream = json_errors_setup;
		f->api = a;
		struct api_logger *l = (void *)h2o_create_logger(paths[i], sizeof(*l));
		l->super.log_access = log_access;
		l->api = a;
	}
	h2o_context_init(&a->ctx, a->loop, &a->h2o);
	a->accept.ctx = &a->ctx;
	a->accept.hosts = a->h2o.hosts;
	a->accept.ssl_ctx = a->tls;
	a->h2o_ready = 1;
}

static void api_freed_cb(uv_handle_t *h)
{
	struct api *a = h->data;
	void (*done)(void *) = a->done;
	void *arg = a->done_arg;
	free(a);
	if (done)
		done(arg);
}

static void release(struct api *a)
{
	if (a->h2o_ready) {
		h2o_context_dispose(&a->ctx);
		h2o_config_dispose(&a->h2o);
	}
	SSL_CTX_free(a->tls);
	store_query_close(a->store);
	signin_free(a->signin);
}

/* h2o_context_dispose runs the loop once (UV_RUN_NOWAIT) to finish closing
 * its timers. From a timer callback that nesting is harmless; from an I/O
 * or close callback (where the last connection goes) it would not be. */
static void dispose_cb(uv_timer_t *t)
{
	struct api *a = t->data;
	release(a);
	uv_close((uv_handle_t *)&a->dispose_timer, api_freed_cb);
}

static void maybe_stopped(struct api *a)
{
	if (!a->stopping || a->nconns || !a->listener_closed || a->disposing)
		return;
	a->disposing = 1;
	uv_timer_start(&a->dispose_timer, dispose_cb, 0, 0);
}

static void listener_closed_cb(uv_handle_t *h)
{
	struct api *a = h->data;
	a->listener_closed = 1;
	maybe_stopped(a);
}

/* The listener's close callback when api_start fails. */
static void start_failed_cb(uv_handle_t *h)
{
	free(h->data);
}

int api_start(struct api **out, uv_loop_t *loop, const struct api_config *cfg, char *err,
	      size_t errlen)
{
	if (!cfg->ca_file || !cfg->cert_file || !cfg->key_file || !cfg->store_path) {
		snprintf(err, errlen, "[api] needs the CA, the collector's certificate and key, "
				      "and the store's path");
		return UV_EINVAL;
	}
	struct api *a = calloc(1, sizeof(*a));
	if (!a) {
		snprintf(err, errlen, "out of memory");
		return UV_ENOMEM;
	}
	a->loop = loop;
	a->cfg = *cfg;
	a->cfg.listen = a->cfg.ca_file = a->cfg.cert_file = a->cfg.key_file = a->cfg.crl_file =
		a->cfg.store_path = NULL;
	if (!a->cfg.page_max)
		a->cfg.page_max = 500;
	if (!a->cfg.max_body)
		a->cfg.max_body = 1u << 20;
	if (!a->cfg.max_connections)
		a->cfg.max_connections = 256;
	if (!a->cfg.signin_ttl_ms)
		a->cfg.signin_ttl_ms = 5 * 60 * 1000;
	if (!a->cfg.session_ttl_ms)
		a->cfg.session_ttl_ms = 8 * 3600 * 1000;
	char why[512];
	int rc;
	/* Room for every connection's operator to hold a link and a session. */
	a->signin = signin_new(4 * (size_t)a->cfg.max_connections, (int64_t)a->cfg.signin_ttl_ms,
			       (int64_t)a->cfg.session_ttl_ms);
	if (!a->signin) {
		snprintf(err, errlen, "out of memory");
		rc = UV_ENOMEM;
		goto fail;
	}
	rc = store_query_open(&a->store, cfg->store_path, cfg->query_budget_ms, why,
				  sizeof(why));
	if (rc < 0) {
		snprintf(err, errlen, "[api] %s", why);
		goto fail;
	}
	rc = tls_setup(a, cfg, err, errlen);
	if (rc < 0)
		goto fail;
	rc = listen_on(a, cfg->listen ? cfg->listen : "127.0.0.1:8443", err, errlen);
	if (rc < 0) {
		release(a);
		if (a->listener.loop) {
			uv_close((uv_handle_t *)&a->listener, start_failed_cb);
			return rc;
		}
		free(a);
		return rc;
	}
	h2o_setup(a);
	uv_timer_init(loop, &a->dispose_timer);
	a->dispose_timer.data = a;
	*out = a;
	return 0;
fail:
	release(a);
	free(a);
	return rc;
}

int api_reload_crl(struct api *a, const char *crl_file, char *err, size_t errlen)
{
	return tls_ctx_reload_crl(a->tls, crl_file, NULL, err, errlen);
}

void api_stop(struct api *a, void (*done)(void *arg), void *arg)
{
	a->stopping = 1;
	a->done = done;
	a->done_arg = arg;
	uv_close((uv_handle_t *)&a->listener, listener_closed_cb);
	/* h2o closes a connection whose peer has gone; shutting the socket
	 * down for reading makes every connection, idle or busy, HTTP/1 or 2,
	 * see exactly that. Writing stays open: a connection still finishing
	 * its TLS handshake writes once more (session tickets), and a write
	 * that fails there left h2o waiting on its timers for good.
	 * (h2o_context_request_shutdown is no use here: its HTTP/2 grace timer
	 * would outlive the context.) */
	for (struct api_conn *c = a->conns; c; c = c->next) {
		uv_os_fd_t fd;
		if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
			shutdown(fd, SHUT_RD);
	}
	maybe_stopped(a);
}
