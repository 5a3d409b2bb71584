/* exfleetctl's HTTPS client (ctl_http.h): a blocking socket with one
 * deadline per request, OpenSSL on top, and a parser for the one response
 * each connection carries. */
#include "ctl_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "util.h"

#define KEY_FILE_MAX (1u << 20)
#define READ_CHUNK (16u << 10)

/* ---- the URL ---- */

int ctl_url_parse(const char *url, struct ctl_url *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (strncasecmp(url, "https://", 8) != 0) {
		snprintf(err, errlen, "'%s' is not an https:// URL (the API speaks only HTTPS)",
			 url);
		return -1;
	}
	const char *p = url + 8;
	size_t n;
	if (*p == '[') {
		n = strcspn(p + 1, "]");
		if (p[1 + n] != ']' || n == 0 || n >= sizeof(out->host))
			goto bad;
		memcpy(out->host, p + 1, n);
		struct in6_addr a6;
		if (inet_pton(AF_INET6, out->host, &a6) != 1)
			goto bad;
		out->is_ip = 1;
		p += n + 2;
	} else {
		n = strcspn(p, ":/?#");
		if (n == 0 || n >= sizeof(out->host) ||
		    strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") <
			n)
			goto bad;
		memcpy(out->host, p, n);
		struct in_addr a4;
		out->is_ip = inet_pton(AF_INET, out->host, &a4) == 1;
		p += n;
	}
	snprintf(out->port, sizeof(out->port), "443");
	if (*p == ':') {
		n = strspn(++p, "0123456789");
		if (n == 0 || n > 5 || atoi(p) < 1 || atoi(p) > 65535)
			goto bad;
		snprintf(out->port, sizeof(out->port), "%d", atoi(p));
		p += n;
	}
	if (*p && *p != '/')
		goto bad;
	n = strlen(p);
	while (n > 0 && p[n - 1] == '/')
		n--;
	if (n >= sizeof(out->base) || strcspn(p, "?# \t\r\n") < n)
		goto bad;
	memcpy(out->base, p, n);
	return 0;
bad:
	snprintf(err, errlen, "'%s' is not a URL like https://collector.example:8443", url);
	return -1;
}

/* ---- parsing a response ---- */

void ctl_http_response_free(struct ctl_http_response *r)
{
	free(r->body);
	memset(r, 0, sizeof(*r));
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return CTL_HTTP_PROTOCOL;
}

/* Not there yet: more may come, unless the connection has ended. */
static int short_of(int eof, char *err, size_t errlen, const char *where)
{
	if (!eof)
		return CTL_HTTP_MORE;
	return fail(err, errlen, "the answer ends inside its %s", where);
}

/* Up to 60 bytes of a line, printable, for a message. */
static const char *shown(const char *p, size_t n, char *buf, size_t len)
{
	size_t i;
	for (i = 0; i < n && i < 60 && i + 1 < len; i++)
		buf[i] = p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '?';
	buf[i] = '\0';
	return buf;
}

static int is_tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

struct head {
	int status;
	int64_t content_length; /* -1: none */
	int chunked;
	const char *body;       /* just after the blank line */
};

static int header_line(const char *q, size_t n, size_t max_body, struct head *h,
		       struct ctl_http_response *r, char *err, size_t errlen)
{
	char buf[64];
	size_t name = 0;
	while (name < n && is_tchar((unsigned char)q[name]))
		name++;
	if (name == 0 || name == n || q[name] != ':')
		return fail(err, errlen, "malformed header line '%s'",
			    shown(q, n, buf, sizeof(buf)));
	const char *v = q + name + 1;
	size_t vlen = n - name - 1;
	while (vlen && (*v == ' ' || *v == '\t'))
		v++, vlen--;
	while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
		vlen--;
	for (size_t i = 0; i < vlen; i++)
		if (((unsigned char)v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
			return fail(err, errlen, "control character in header '%s'",
				    shown(q, name, buf, sizeof(buf)));
	if (name == 14 && strncasecmp(q, "content-length", 14) == 0) {
		uint64_t len = 0;
		if (vlen == 0 || strspn(v, "0123456789") < vlen)
			return fail(err, errlen, "Content-Length '%s' is not a number",
				    shown(v, vlen, buf, sizeof(buf)));
		for (size_t i = 0; i < vlen; i++) {
			len = len * 10 + (uint64_t)(v[i] - '0');
			if (len > max_body)
				return fail(err, errlen,
					    "the body is larger than the limit of %zu bytes",
					    max_body);
		}
		if (h->content_length >= 0 && (uint64_t)h->content_length != len)
			return fail(err, errlen, "two different Content-Length headers");
		h->content_length = (int64_t)len;
	} else if (name == 17 && strncasecmp(q, "transfer-encoding", 17) == 0) {
		if (vlen != 7 || strncasecmp(v, "chunked", 7) != 0)
			return fail(err, errlen,
				    "Transfer-Encoding '%s' is not supported (only chunked)",
				    shown(v, vlen, buf, sizeof(buf)));
		h->chunked = 1;
	} else if (name == 12 && strncasecmp(q, "content-type", 12) == 0) {
		snprintf(r->content_type, sizeof(r->content_type), "%.*s", (int)vlen, v);
	}
	return 0;
}

/* The status line and headers starting at p. */
static int parse_head(const char *p, const char *end, int eof, size_t max_body, struct head *h,
		      struct ctl_http_response *r, char *err, size_t errlen)
{
	char buf[64];
	memset(h, 0, sizeof(*h));
	h->content_length = -1;
	r->content_type[0] = '\0';
	for (const char *q = p;;) {
		const char *nl = memchr(q, '\n', (size_t)(end - q));
		if ((size_t)((nl ? nl : end) - p) > CTL_HTTP_HEADER_MAX)
			return fail(err, errlen, "headers larger than %u bytes",
				    CTL_HTTP_HEADER_MAX);
		if (!nl)
			return short_of(eof, err, errlen, "headers");
		size_t n = (size_t)(nl - q);
		if (n && q[n - 1] == '\r')
			n--;
		if (q == p) {
			if (n < 12 || memcmp(q, "HTTP/1.", 7) != 0 || q[7] < '0' || q[7] > '9' ||
			    q[8] != ' ' || strspn(q + 9, "0123456789") < 3 ||
			    (n > 12 && q[12] != ' '))
				return fail(err, errlen, "not an HTTP/1.x status line: '%s'",
					    shown(q, n, buf, sizeof(buf)));
			h->status = atoi(q + 9);
			if (h->status < 100 || h->status == 101)
				return fail(err, errlen, "unexpected status %d", h->status);
		} else if (n == 0) {
			h->body = nl + 1;
			return 0;
		} else if (header_line(q, n, max_body, h, r, err, errlen) < 0) {
			return CTL_HTTP_PROTOCOL;
		}
		q = nl + 1;
	}
}

/* Walks a chunked body from p: checks it and measures it (*total), and
 * copies the data into out when out is not NULL. Trailers are ignored. */
static int walk_chunks(const char *p, const char *end, int eof, size_t max_body, char *out,
		       size_t *total, const char **after, char *err, size_t errlen)
{
	char buf[64];
	size_t sum = 0;
	for (;;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if ((size_t)((nl ? nl : end) - p) > 1024)
			return fail(err, errlen, "chunk size line longer than 1024 bytes");
		if (!nl)
			return short_of(eof, err, errlen, "chunked body");
		size_t n = (size_t)(nl - p), digits = 0;
		if (n && p[n - 1] == '\r')
			n--;
		uint64_t size = 0;
		for (; digits < n && strchr("0123456789abcdefABCDEF", p[digits]) && p[digits];
		     digits++) {
			char c = p[digits];
			size = size * 16 + (uint64_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
			if (size > max_body - sum)
				return fail(err, errlen,
					    "the body is larger than the limit of %zu bytes",
					    max_body);
		}
		if (digits == 0 || (digits < n && !strchr("; \t", p[digits])))
			return fail(err, errlen, "bad chunk size line '%s'",
				    shown(p, n, buf, sizeof(buf)));
		p = nl + 1;
		if (size == 0)
			break;
		if ((size_t)(end - p) < size + 1)
			return short_of(eof, err, errlen, "chunked body");
		if (out)
			memcpy(out + sum, p, size);
		sum += size;
		p += size;
		if (p[0] == '\r' && end - p < 2)
			return short_of(eof, err, errlen, "chunked body");
		if (p[0] == '\r' && p[1] == '\n')
			p += 2;
		else if (p[0] == '\n')
			p++;
		else
			return fail(err, errlen, "chunk data is not followed by a line end");
	}
	/* Trailers, up to a blank line. */
	for (const char *start = p;;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if ((size_t)((nl ? nl : end) - start) > CTL_HTTP_HEADER_MAX)
			return fail(err, errlen, "trailers larger than %u bytes",
				    CTL_HTTP_HEADER_MAX);
		if (!nl)
			return short_of(eof, err, errlen, "trailers");
		size_t n = (size_t)(nl - p);
		p = nl + 1;
		if (n == 0 || (n == 1 && nl[-1] == '\r'))
			break;
	}
	*total = sum;
	*after = p;
	return 0;
}

int ctl_http_parse(const char *buf, size_t len, int eof, size_t max_body,
		   struct ctl_http_response *r, char *err, size_t errlen)
{
	const char *end = buf + len, *p = buf;
	struct head h;
	memset(r, 0, sizeof(*r));
	do {
		int rc = parse_head(p, end, eof, max_body, &h, r, err, errlen);
		if (rc < 0)
			return rc;
		p = h.body;
	} while (h.status < 200); /* 1xx: an interim answer, the real one follows */

	const char *from = h.body;
	size_t n = 0;
	const char *after;
	int no_body = h.status == 204 || h.status == 304;
	if (no_body) {
		n = 0;
	} else if (h.chunked) {
		int rc = walk_chunks(from, end, eof, max_body, NULL, &n, &after, err, errlen);
		if (rc < 0)
			return rc;
	} else if (h.content_length >= 0) {
		n = (size_t)h.content_length;
		if ((size_t)(end - from) < n)
			return eof ? fail(err, errlen,
					  "the answer ends after %zu of %zu body bytes",
					  (size_t)(end - from), n)
				   : CTL_HTTP_MORE;
	} else {
		if (!eof)
			return CTL_HTTP_MORE;
		n = (size_t)(end - from);
		if (n > max_body)
			return fail(err, errlen, "the body is larger than the limit of %zu bytes",
				    max_body);
	}
	r->body = malloc(n + 1);
	if (!r->body)
		return fail(err, errlen, "out of memory for a body of %zu bytes", n);
	if (h.chunked && !no_body)
		walk_chunks(from, end, 1, max_body, r->body, &n, &after, err, errlen);
	else
		memcpy(r->body, from, n);
	r->body[n] = '\0';
	r->len = n;
	r->status = h.status;
	return 0;
}

/* ---- the connection ---- */

struct ctl_http {
	SSL_CTX *ctx;
	struct ctl_url url;
	char *url_text, *ca_file, *cert_file;
	int64_t timeout_ms;
};

void ctl_http_close(struct ctl_http *h)
{
	if (!h)
		return;
	SSL_CTX_free(h->ctx);
	free(h->url_text);
	free(h->ca_file);
	free(h->cert_file);
	free(h);
}

static int local_fail(char *err, size_t errlen, const char *fmt, const char *file)
{
	snprintf(err, errlen, fmt, file);
	ERR_clear_error();
	return CTL_HTTP_LOCAL;
}

/* The key's PEM is read here, so that it can be wiped once parsed. */
static int load_key(SSL_CTX *ctx, const char *key_file, char *err, size_t errlen)
{
	char *pem = NULL;
	size_t len = 0;
	if (util_read_file(key_file, KEY_FILE_MAX, &pem, &len, err, errlen) < 0)
		return CTL_HTTP_LOCAL;
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	OPENSSL_cleanse(pem, len);
	free(pem);
	int rc = 0;
	if (!key)
		rc = local_fail(err, errlen, "%s: not a PEM private key", key_file);
	else if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1)
		rc = local_fail(err, errlen, "%s does not belong to the certificate", key_file);
	EVP_PKEY_free(key);
	return rc;
}

int ctl_http_open(struct ctl_http **out, const struct ctl_http_settings *s, char *err,
		  size_t errlen)
{
	struct ctl_http *h = calloc(1, sizeof(*h));
	int rc = CTL_HTTP_LOCAL;
	*out = NULL;
	if (!h)
		return local_fail(err, errlen, "%s", "out of memory");
	if (ctl_url_parse(s->url, &h->url, err, errlen) < 0)
		goto fail;
	h->url_text = strdup(s->url);
	h->ca_file = strdup(s->ca_file);
	h->cert_file = strdup(s->cert_file);
	h->timeout_ms = s->timeout_ms > 0 ? s->timeout_ms : 30000;
	h->ctx = SSL_CTX_new(TLS_client_method());
	if (!h->url_text || !h->ca_file || !h->cert_file || !h->ctx) {
		local_fail(err, errlen, "%s", "out of memory");
		goto fail;
	}
	SSL_CTX_set_min_proto_version(h->ctx, TLS1_3_VERSION);
	SSL_CTX_set_verify(h->ctx, SSL_VERIFY_PEER, NULL);
	/* A close without close_notify is judged by the response's framing. */
	SSL_CTX_set_options(h->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (SSL_CTX_load_verify_locations(h->ctx, s->ca_file, NULL) != 1) {
		local_fail(err, errlen, "%s: cannot read a PEM CA certificate from it", s->ca_file);
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(h->ctx, s->cert_file) != 1) {
		local_fail(err, errlen, "%s: cannot read a PEM certificate from it", s->cert_file);
		goto fail;
	}
	rc = load_key(h->ctx, s->key_file, err, errlen);
	if (rc < 0)
		goto fail;
	*out = h;
	return 0;
fail:
	ctl_http_close(h);
	return rc;
}

/* Waits until fd is ready for events or the deadline passes: 0 or -1. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - util_now_ms();
		if (left <= 0)
			return -1;
		struct pollfd pfd = {.fd = fd, .events = events};
		int n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -1;
	}
}

static int dial(struct ctl_http *h, int64_t deadline, int *out, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	int gai = getaddrinfo(h->url.host, h->url.port, &hints, &res);
	if (gai != 0) {
		snprintf(err, errlen, "cannot resolve %s: %s", h->url.host, gai_strerror(gai));
		return CTL_HTTP_UNREACHABLE;
	}
	int last = ECONNREFUSED;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			last = errno;
			continue;
		}
		int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
		if (rc < 0 && errno == EINPROGRESS) {
			socklen_t len = sizeof(last);
			if (wait_fd(fd, POLLOUT, deadline) < 0)
				last = ETIMEDOUT;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &last, &len) == 0 &&
				 last == 0)
				rc = 0;
		} else if (rc < 0) {
			last = errno;
		}
		if (rc == 0) {
			freeaddrinfo(res);
			*out = fd;
			return 0;
		}
		close(fd);
	}
	freeaddrinfo(res);
	if (last == ETIMEDOUT)
		snprintf(err, errlen, "no answer within %lld s", (long long)h->timeout_ms / 1000);
	else
		snprintf(err, errlen, "%s", strerror(last));
	return CTL_HTTP_UNREACHABLE;
}

/* Why the collector refused us, from the alert it sent. */
static void alert_reason(const struct ctl_http *h, int alert, char *err, size_t errlen)
{
	switch (alert) {
	case SSL_AD_UNKNOWN_CA:
		snprintf(err, errlen,
			 "the collector refused our certificate %s: unknown CA (it is not from the "
			 "deployment's CA); use one from exfleetctl pki issue operator NAME",
			 h->cert_file);
		break;
	case SSL_AD_CERTIFICATE_REVOKED:
		snprintf(
		    err, errlen,
		    "the collector refused our certificate %s: it is revoked; ask for a new one "
		    "(exfleetctl pki issue operator NAME --force)",
		    h->cert_file);
		break;
	case SSL_AD_CERTIFICATE_EXPIRED:
		snprintf(err, errlen, "the collector refused our certificate %s: it has expired",
			 h->cert_file);
		break;
	case SSL_AD_PROTOCOL_VERSION:
		snprintf(err, errlen, "the collector does not speak TLS 1.3");
		break;
	default:
		snprintf(err, errlen, "the collector refused our certificate %s (TLS alert: %s)",
			 h->cert_file, SSL_alert_desc_string_long(alert));
		break;
	}
}

/* Why the collector's certificate did not verify. */
static void verify_reason(const struct ctl_http *h, long verify, char *err, size_t errlen)
{
	switch (verify) {
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		snprintf(err, errlen,
			 "the collector's certificate does not name %s; put the name it was issued "
			 "for in --url",
			 h->url.host);
		break;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
		snprintf(err, errlen,
			 "the collector's certificate is not from the CA in %s (unknown CA); give "
			 "the deployment's ca.crt with --ca",
			 h->ca_file);
		break;
	case X509_V_ERR_CERT_HAS_EXPIRED:
		snprintf(err, errlen, "the collector's certificate has expired");
		break;
	default:
		snprintf(err, errlen, "the collector's certificate does not verify against %s: %s",
			 h->ca_file, X509_verify_cert_error_string(verify));
		break;
	}
}

/* An SSL call failed: says why, and which kind of failure it is. */
static int ssl_failure(const struct ctl_http *h, SSL *ssl, int ret, const char *during,
		       char *err, size_t errlen)
{
	int e = SSL_get_error(ssl, ret);
	int sys = errno;
	unsigned long code = ERR_peek_last_error();
	long verify = SSL_get_verify_result(ssl);
	int reason = ERR_GET_LIB(code) == ERR_LIB_SSL ? ERR_GET_REASON(code) : 0;
	if (verify != X509_V_OK)
		verify_reason(h, verify, err, errlen);
	else if (reason > SSL_AD_REASON_OFFSET)
		alert_reason(h, reason - SSL_AD_REASON_OFFSET, err, errlen);
	else if (code)
		snprintf(err, errlen,
			 "TLS failed %s: %s; is this the collector's [api] listen address?", during,
			 ERR_reason_error_string(code));
	else if (e == SSL_ERROR_SYSCALL && ret < 0 && sys)
		snprintf(err, errlen,
			 "the connection failed %s: %s (did the collector refuse our certificate "
			 "%s?)",
			 during, strerror(sys), h->cert_file);
	else
		snprintf(
		    err, errlen,
		    "the collector closed the connection %s (did it refuse our certificate %s?)",
		    during, h->cert_file);
	ERR_clear_error();
	return CTL_HTTP_TLS;
}

enum ssl_call_kind { CALL_CONNECT, CALL_WRITE, CALL_READ };

/* Runs an SSL call until it is done or fails, waiting while it wants the
 * socket: its result, or INT_MIN when the deadline passed first. */
static int ssl_call(SSL *ssl, int fd, int64_t deadline, enum ssl_call_kind op, void *buf,
		    size_t len)
{
	int n = len > INT_MAX ? INT_MAX : (int)len;
	for (;;) {
		ERR_clear_error();
		int rc = op == CALL_CONNECT ? SSL_connect(ssl)
			 : op == CALL_WRITE ? SSL_write(ssl, buf, n)
					      : SSL_read(ssl, buf, n);
		if (rc > 0)
			return rc;
		int want = SSL_get_error(ssl, rc);
		short events = want == SSL_ERROR_WANT_READ    ? POLLIN
			       : want == SSL_ERROR_WANT_WRITE ? POLLOUT
							      : 0;
		if (!events)
			return rc;
		if (wait_fd(fd, events, deadline) < 0)
			return INT_MIN;
	}
}

static int timed_out(const struct ctl_http *h, const char *during, char *err, size_t errlen)
{
	snprintf(err, errlen, "no answer %s within %lld s", during,
		 (long long)h->timeout_ms / 1000);
	return CTL_HTTP_UNREACHABLE;
}

/* The request's bytes: request line, headers, body. */
static char *request_text(const struct ctl_http *h, const char *method, const char *path,
			  const char *content_type, const void *body, size_t len, size_t *out_len)
{
	char head[4096 + 512];
	int host_v6 = strchr(h->url.host, ':') != NULL;
	int n = snprintf(head, sizeof(head),
			 "%s %s%s HTTP/1.1\r\nHost: %s%s%s%s%s\r\nUser-Agent: exfleetctl/%s\r\n"
			 "Connection: close\r\n",
			 method, h->url.base, path, host_v6 ? "[" : "", h->url.host,
			 host_v6 ? "]" : "", strcmp(h->url.port, "443") ? ":" : "",
			 strcmp(h->url.port, "443") ? h->url.port : "", EXFLEET_VERSION);
	if (n < 0 || (size_t)n >= sizeof(head) - 256)
		return NULL;
	if (body)
		n += snprintf(head + n, sizeof(head) - (size_t)n,
			      "Content-Type: %s\r\nContent-Length: %zu\r\n", content_type, len);
	else if (strcmp(method, "POST") == 0)
		n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: 0\r\n");
	n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
	char *text = malloc((size_t)n + (body ? len : 0) + 1);
	if (!text)
		return NULL;
	memcpy(text, head, (size_t)n);
	if (body)
		memcpy(text + n, body, len);
	*out_len = (size_t)n + (body ? len : 0);
	return text;
}

int ctl_http_request(struct ctl_http *h, const char *method, const char *path,
		     const char *content_type, const void *body, size_t len,
		     struct ctl_http_response *r, char *err, size_t errlen)
{
	int64_t deadline = util_now_ms() + h->timeout_ms;
	const size_t cap_max = CTL_HTTP_HEADER_MAX + CTL_HTTP_BODY_MAX + (1u << 20);
	int fd = -1, rc, ret;
	SSL *ssl = NULL;
	char *text = NULL, *buf = NULL;
	size_t text_len = 0, used = 0, cap = 0;
	memset(r, 0, sizeof(*r));

	if (path[0] != '/' || strlen(path) > 4096 || strcspn(path, " \r\n") != strlen(path)) {
		snprintf(err, errlen, "request path too long or not encoded");
		return CTL_HTTP_LOCAL;
	}
	rc = dial(h, deadline, &fd, err, errlen);
	if (rc < 0)
		return rc;
	ssl = SSL_new(h->ctx);
	if (!ssl || SSL_set_fd(ssl, fd) != 1) {
		rc = local_fail(err, errlen, "%s", "out of memory");
		goto out;
	}
	if (h->url.is_ip) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), h->url.host);
	} else {
		SSL_set_tlsext_host_name(ssl, h->url.host);
		SSL_set1_host(ssl, h->url.host);
	}
	ret = ssl_call(ssl, fd, deadline, CALL_CONNECT, NULL, 0);
	if (ret == INT_MIN) {
		rc = timed_out(h, "to the TLS handshake", err, errlen);
		goto out;
	}
	if (ret <= 0) {
		rc = ssl_failure(h, ssl, ret, "in the TLS handshake", err, errlen);
		goto out;
	}

	text = request_text(h, method, path, content_type, body, len, &text_len);
	if (!text) {
		rc = local_fail(err, errlen, "%s", "out of memory");
		goto out;
	}
	for (size_t sent = 0; sent < text_len;) {
		ret = ssl_call(ssl, fd, deadline, CALL_WRITE, text + sent, text_len - sent);
		if (ret == INT_MIN) {
			rc = timed_out(h, "while sending the request", err, errlen);
			goto out;
		}
		if (ret <= 0) {
			rc = ssl_failure(h, ssl, ret, "while sending the request", err, errlen);
			goto out;
		}
		sent += (size_t)ret;
	}

	for (;;) {
		if (used == cap) {
			if (cap >= cap_max) {
				rc = fail(err, errlen, "the answer is larger than %u MiB",
					  CTL_HTTP_BODY_MAX >> 20);
				goto out;
			}
			cap = cap ? cap * 2 : READ_CHUNK;
			if (cap > cap_max)
				cap = cap_max;
			char *grown = realloc(buf, cap);
			if (!grown) {
				rc = local_fail(err, errlen, "%s", "out of memory");
				goto out;
			}
			buf = grown;
		}
		ret = ssl_call(ssl, fd, deadline, CALL_READ, buf + used, cap - used);
		if (ret == INT_MIN) {
			rc = timed_out(h, "from the collector", err, errlen);
			goto out;
		}
		int eof = ret <= 0 && SSL_get_error(ssl, ret) == SSL_ERROR_ZERO_RETURN;
		if (ret <= 0 && used == 0 && ERR_peek_last_error() == 0) {
			/* The collector checks our certificate after the handshake
			 * and, refusing it, may close without a TLS alert. */
			snprintf(err, errlen,
				 "the collector closed the connection without answering: it does "
				 "that when it refuses our certificate %s (not from the "
				 "deployment's CA, revoked or expired); check it with exfleetctl "
				 "pki list, and the collector's log for the reason",
				 h->cert_file);
			rc = CTL_HTTP_TLS;
			goto out;
		}
		if (ret <= 0 && !eof) {
			rc = ssl_failure(h, ssl, ret, "while reading the answer", err, errlen);
			goto out;
		}
		if (ret > 0)
			used += (size_t)ret;
		rc = ctl_http_parse(buf, used, eof, CTL_HTTP_BODY_MAX, r, err, errlen);
		if (rc != CTL_HTTP_MORE)
			break;
	}
out:
	if (ssl && rc != CTL_HTTP_TLS)
		SSL_shutdown(ssl);
	SSL_free(ssl);
	if (fd >= 0)
		close(fd);
	if (text) {
		OPENSSL_cleanse(text, text_len); /* a body may carry a sealed secret */
		free(text);
	}
	free(buf);
	if (rc < 0)
		ctl_http_response_free(r);
	return rc;
}
