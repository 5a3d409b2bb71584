/* promote: what an operator sees. A thread of its own lists the hosts the
 * collector's HTTPS API shows as AFFECTED (GET /api/v1/hosts?status=AFFECTED,
 * every page of at most 500), every --poll-ms, over one kept-alive HTTPS
 * connection with a viewer certificate minted from the test CA, and notes
 * for each of its agents when a listing first showed it and the
 * status_since the listing gave. The agents' loop takes the notes with
 * lg_poller_drain; nothing here touches it.
 *
 * The HTTP/1.1 it speaks is what this one request needs: a GET, then the
 * response's status line, Content-Length or chunked body. It talks only to
 * the collector's API on this machine. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "loadgen.h"
#include "util.h"

#define PAGE 500
#define IO_TIMEOUT_S 5
#define HEAD_MAX (64u << 10)
#define BODY_MAX (64u << 20)

struct seen {
	unsigned index;
	int64_t seen_us;
	int64_t since_ms;
};

struct lg_poller {
	const struct lg_options *o;
	unsigned first, count;
	SSL_CTX *ctx;
	X509 *cert;
	SSL *ssl;
	int fd;
	uv_thread_t thread;
	uv_mutex_t lock;
	int stop;           /* under lock */
	uint8_t *known;     /* per agent: already reported */
	unsigned nknown;
	struct seen *queue; /* under lock: seen, not yet drained */
	unsigned nqueue;
	uint64_t polls, errors;
	struct lg_hist latency;
	char error[LG_REASON_LEN];
	char *buf; /* the response being read */
	size_t have, cap;
};

static void note_error(struct lg_poller *p, const char *fmt, const char *detail)
{
	p->errors++;
	if (!p->error[0])
		snprintf(p->error, sizeof(p->error), fmt, detail);
}

static void disconnect(struct lg_poller *p)
{
	if (p->ssl) {
		SSL_free(p->ssl);
		p->ssl = NULL;
	}
	if (p->fd >= 0) {
		close(p->fd);
		p->fd = -1;
	}
	ERR_clear_error();
}

static int connect_api(struct lg_poller *p)
{
	struct timeval tv = {IO_TIMEOUT_S, 0};
	p->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (p->fd < 0) {
		note_error(p, "API: cannot make a socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(p->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(p->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(p->fd, (const struct sockaddr *)&p->o->api_addr, sizeof(p->o->api_addr)) < 0) {
		note_error(p, "API: cannot connect: %s", strerror(errno));
		disconnect(p);
		return -1;
	}
	p->ssl = SSL_new(p->ctx);
	if (!p->ssl || SSL_set_fd(p->ssl, p->fd) != 1 || SSL_set1_host(p->ssl, p->o->name) != 1 ||
	    SSL_set_tlsext_host_name(p->ssl, p->o->name) != 1 || SSL_connect(p->ssl) != 1) {
		char why[200];
		ERR_error_string_n(ERR_peek_error(), why, sizeof(why));
		note_error(p, "API: TLS handshake failed: %s", why);
		disconnect(p);
		return -1;
	}
	return 0;
}

/* Reads more of the response into buf: 1, 0 at the end of the connection,
 * -1 on an error. */
static int read_more(struct lg_poller *p)
{
	if (p->cap - p->have < 16384) {
		size_t cap = p->cap ? p->cap * 2 : 65536;
		if (cap > HEAD_MAX + BODY_MAX)
			return -1;
		char *grown = realloc(p->buf, cap + 1);
		if (!grown)
			return -1;
		p->buf = grown;
		p->cap = cap;
	}
	int n = SSL_read(p->ssl, p->buf + p->have, (int)(p->cap - p->have));
	if (n <= 0)
		return SSL_get_error(p->ssl, n) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
	p->have += (size_t)n;
	p->buf[p->have] = '\0';
	return 1;
}

static const char *header(const char *head, const char *name)
{
	size_t len = strlen(name);
	for (const char *l = strstr(head, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
		if (strncasecmp(l + 2, name, len) == 0 && l[2 + len] == ':')
			return l + 3 + len + strspn(l + 3 + len, " \t");
	}
	return NULL;
}

/* GET path: the status code and the body (NUL-terminated, in p->buf after
 * *body_at), or -1. */
static int get(struct lg_poller *p, const char *path, int *status, size_t *body_at,
               size_t *body_len, int *close_after)
{
	char req[512];
	int len = snprintf(req, sizeof(req),
	                   "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n"
	                   "User-Agent: exfleet-loadgen\r\n\r\n",
	                   path, p->o->api);
	if (SSL_write(p->ssl, req, len) != len)
		return -1;
	p->have = 0;
	char *end = NULL;
	while (!(end = p->have ? strstr(p->buf, "\r\n\r\n") : NULL)) {
		if (p->have > HEAD_MAX || read_more(p) <= 0)
			return -1;
	}
	size_t head_len = (size_t)(end - p->buf) + 4;
	if (sscanf(p->buf, "HTTP/1.%*d %d", status) != 1)
		return -1;
	end[2] = '\0'; /* the headers, for header(); the body starts at head_len */
	const char *cl = header(p->buf, "Content-Length");
	const char *te = header(p->buf, "Transfer-Encoding");
	const char *conn = header(p->buf, "Connection");
	*close_after = conn && strncasecmp(conn, "close", 5) == 0;
	int chunked = te && strncasecmp(te, "chunked", 7) == 0;
	size_t want = cl ? strtoull(cl, NULL, 10) : 0;
	if (!chunked && !cl)
		return -1;
	if (!chunked) {
		if (want > BODY_MAX)
			return -1;
		while (p->have < head_len + want)
			if (read_more(p) <= 0)
				return -1;
		p->buf[head_len + want] = '\0';
		*body_at = head_len;
		*body_len = want;
		return 0;
	}
	/* Chunked: the chunks are moved together in place, behind the head. */
	size_t out = head_len, at = head_len;
	for (;;) {
		char *crlf;
		while (!(crlf = strstr(p->buf + at, "\r\n")))
			if (read_more(p) <= 0)
				return -1;
		size_t size = strtoull(p->buf + at, NULL, 16);
		size_t data = (size_t)(crlf - p->buf) + 2;
		if (size > BODY_MAX || out - head_len + size > BODY_MAX)
			return -1;
		while (p->have < data + size + 2)
			if (read_more(p) <= 0)
				return -1;
		if (size == 0)
			break;
		memmove(p->buf + out, p->buf + data, size);
		out += size;
		at = data + size + 2;
		/* Keep what follows the chunk right behind what was moved. */
		memmove(p->buf + out, p->buf + at, p->have - at);
		p->have -= at - out;
		at = out;
		p->buf[p->have] = '\0';
	}
	p->buf[out] = '\0';
	*body_at = head_len;
	*body_len = out - head_len;
	return 0;
}

/* The agent index of a host id of this fleet, or -1. */
static long agent_of(const struct lg_poller *p, const char *host)
{
	size_t plen = strlen(p->o->prefix);
	char *end;
	if (strncmp(host, p->o->prefix, plen) != 0)
		return -1;
	unsigned long n = strtoul(host + plen, &end, 10);
	if (*end || n == 0 || n - 1 < p->first || n - 1 >= (unsigned long)p->first + p->count)
		return -1;
	return (long)(n - 1);
}

static int64_t time_ms(json_t *v)
{
	if (json_is_integer(v))
		return (int64_t)json_integer_value(v);
	return 0;
}

/* One listing, every page; 0 or -1. */
static int poll_once(struct lg_poller *p)
{
	unsigned offset = 0;
	for (;;) {
		char path[256];
		int status = 0, close_after = 0;
		size_t at = 0, len = 0;
		snprintf(path, sizeof(path), "/api/v1/hosts?status=AFFECTED&limit=%d&offset=%u", PAGE,
		         offset);
		if (!p->ssl && connect_api(p) < 0)
			return -1;
		uint64_t t0 = uv_hrtime();
		int rc = get(p, path, &status, &at, &len, &close_after);
		int64_t now_us = lg_wall_us();
		lg_hist_add(&p->latency, (uv_hrtime() - t0) / 1000);
		if (rc < 0) {
			note_error(p, "API: %s: no HTTP response", path);
			disconnect(p);
			return -1;
		}
		if (close_after)
			disconnect(p);
		if (status != 200) {
			char what[300];
			snprintf(what, sizeof(what), "%d %.200s", status, p->buf + at);
			note_error(p, "API: GET /api/v1/hosts answered %s", what);
			return -1;
		}
		json_error_t jerr;
		json_t *root = json_loadb(p->buf + at, len, 0, &jerr);
		json_t *items = json_object_get(root, "items");
		if (!json_is_array(items)) {
			note_error(p, "API: GET /api/v1/hosts: %s", "not a page of items");
			json_decref(root);
			return -1;
		}
		size_t i;
		json_t *item;
		uv_mutex_lock(&p->lock);
		json_array_foreach(items, i, item) {
			const char *host = json_string_value(json_object_get(item, "host_id"));
			long idx = host ? agent_of(p, host) : -1;
			if (idx < 0 || p->known[idx - p->first])
				continue;
			p->known[idx - p->first] = 1;
			p->nknown++;
			p->queue[p->nqueue++] = (struct seen){(unsigned)idx, now_us,
			                                      time_ms(json_object_get(item, "status_since"))};
		}
		uv_mutex_unlock(&p->lock);
		json_t *next = json_object_get(root, "next");
		offset = json_is_integer(next) ? (unsigned)json_integer_value(next) : 0;
		json_decref(root);
		if (!offset)
			return 0;
	}
}

static void poller_main(void *arg)
{
	struct lg_poller *p = arg;
	for (;;) {
		uv_mutex_lock(&p->lock);
		int stop = p->stop || p->nknown == p->count;
		uv_mutex_unlock(&p->lock);
		if (stop)
			break;
		uint64_t t0 = uv_hrtime();
		p->polls++;
		poll_once(p);
		uint64_t spent_ms = (uv_hrtime() - t0) / 1000000;
		if (spent_ms < p->o->poll_ms)
			uv_sleep((unsigned)(p->o->poll_ms - spent_ms));
	}
	disconnect(p);
}

int lg_poller_start(struct lg_poller **out, const struct lg_options *o, const struct pki_ca *ca,
                    EVP_PKEY *key, unsigned first, unsigned count, char *err, size_t errlen)
{
	char ca_file[1024];
	struct lg_poller *p = calloc(1, sizeof(*p));
	*out = NULL;
	if (!p || !(p->known = calloc(count ? count : 1, 1)) ||
	    !(p->queue = calloc(count ? count : 1, sizeof(*p->queue)))) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	p->o = o;
	p->first = first;
	p->count = count;
	p->fd = -1;
	snprintf(ca_file, sizeof(ca_file), "%s/ca.crt", o->pki_dir);
	if (pki_ca_mint(ca, PKI_ROLE_VIEWER, "exfleet-loadgen-viewer", key, 1, &p->cert, err,
	                errlen) < 0)
		goto fail;
	p->ctx = SSL_CTX_new(TLS_client_method());
	if (!p->ctx || SSL_CTX_set_min_proto_version(p->ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_load_verify_locations(p->ctx, ca_file, NULL) != 1 ||
	    SSL_CTX_use_certificate(p->ctx, p->cert) != 1 || SSL_CTX_use_PrivateKey(p->ctx, key) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "cannot make the API client's TLS context (CA %s)", ca_file);
		goto fail;
	}
	SSL_CTX_set_verify(p->ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(p->ctx, SSL_MODE_AUTO_RETRY);
	uv_mutex_init(&p->lock);
	if (uv_thread_create(&p->thread, poller_main, p) != 0) {
		uv_mutex_destroy(&p->lock);
		snprintf(err, errlen, "cannot start the API poller thread");
		goto fail;
	}
	*out = p;
	return 0;
fail:
	if (p) {
		SSL_CTX_free(p->ctx);
		X509_free(p->cert);
		free(p->known);
		free(p->queue);
		free(p);
	}
	return -1;
}

void lg_poller_drain(struct lg_poller *p, lg_seen_cb cb, void *arg)
{
	uv_mutex_lock(&p->lock);
	for (unsigned i = 0; i < p->nqueue; i++)
		cb(arg, p->queue[i].index, p->queue[i].seen_us, p->queue[i].since_ms);
	p->nqueue = 0;
	uv_mutex_unlock(&p->lock);
}

void lg_poller_stop(struct lg_poller *p, struct lg_result *res)
{
	if (!p)
		return;
	uv_mutex_lock(&p->lock);
	p->stop = 1;
	uv_mutex_unlock(&p->lock);
	uv_thread_join(&p->thread);
	uv_mutex_destroy(&p->lock);
	res->polls += p->polls;
	res->poll_errors += p->errors;
	lg_hist_merge(&res->poll_latency, &p->latency);
	if (p->error[0] && !res->poll_error[0])
		snprintf(res->poll_error, sizeof(res->poll_error), "%s", p->error);
	SSL_CTX_free(p->ctx);
	X509_free(p->cert);
	free(p->known);
	free(p->queue);
	free(p->buf);
	free(p);
}
