/* exfleetctl's HTTPS client: blocking, one request per connection
 * (HTTP/1.1, Connection: close), TLS 1.3 with the collector verified
 * against the deployment's CA and its name or address, and our client
 * certificate presented. Small on purpose: the collector's API is the only
 * server it talks to. */
#ifndef EXFLEET_CTL_HTTP_H
#define EXFLEET_CTL_HTTP_H

#include <stddef.h>
#include <stdint.h>

/* Errors, negative. UNREACHABLE: the name does not resolve, nothing
 * listens, the network is down, or the time ran out. TLS: the handshake
 * failed (the message names the cause: unknown CA, name mismatch, our
 * certificate refused or revoked). PROTOCOL: the answer is not HTTP we
 * understand, or is larger than the limit. LOCAL: our own files or memory.
 * MORE: ctl_http_parse needs more bytes (not an error of a request). */
enum {
	CTL_HTTP_UNREACHABLE = -1,
	CTL_HTTP_TLS = -2,
	CTL_HTTP_PROTOCOL = -3,
	CTL_HTTP_LOCAL = -4,
	CTL_HTTP_MORE = -5,
};

#define CTL_HTTP_HEADER_MAX (64u << 10)
#define CTL_HTTP_BODY_MAX (64u << 20)

/* "https://host[:port][/base]": host is a DNS name, an IPv4 address or
 * [an IPv6 address]; the port defaults to 443; base (without its trailing
 * '/') is put before every request's path. */
struct ctl_url {
	char host[256];
	char port[8];
	char base[256];
	int is_ip;
};
int ctl_url_parse(const char *url, struct ctl_url *out, char *err, size_t errlen);

struct ctl_http_response {
	int status;
	char content_type[128];
	char *body; /* heap, NUL-terminated (the body itself may hold NULs) */
	size_t len;
};
void ctl_http_response_free(struct ctl_http_response *r);

/* Parses one response from buf[0, len): status line, headers, and the body
 * by Content-Length, chunked transfer coding, or (eof set) up to the end of
 * the connection; 1xx responses before it are skipped. Returns 0 with *r
 * filled, CTL_HTTP_MORE when the response is not complete yet (never when
 * eof is set), or CTL_HTTP_PROTOCOL with the reason in err. */
int ctl_http_parse(const char *buf, size_t len, int eof, size_t max_body,
		   struct ctl_http_response *r, char *err, size_t errlen);

struct ctl_http_settings {
	const char *url;       /* as given, for messages */
	const char *ca_file;   /* PEM: the deployment CA */
	const char *cert_file; /* PEM: our certificate */
	const char *key_file;  /* PEM: its key (checked private by the caller) */
	int64_t timeout_ms;    /* for each request: connect, TLS, send, receive */
};

struct ctl_http;

/* Loads the CA, certificate and key (the key's PEM is wiped once parsed).
 * Returns 0, or CTL_HTTP_LOCAL with the reason in err. */
int ctl_http_open(struct ctl_http **out, const struct ctl_http_settings *s, char *err,
		  size_t errlen);
void ctl_http_close(struct ctl_http *h);

/* Sends method base+path (with body of len bytes and content_type when body
 * is not NULL) on a new connection and reads the answer. Returns 0 with *r
 * filled (any status), or a CTL_HTTP_ error with a message in err that says
 * what happened and what to check. */
int ctl_http_request(struct ctl_http *h, const char *method, const char *path,
		     const char *content_type, const void *body, size_t len,
		     struct ctl_http_response *r, char *err, size_t errlen);

#endif
