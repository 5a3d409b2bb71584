/* exfleetctl's HTTP client: the response parser takes what h2o sends
 * (Content-Length or chunked, in pieces of any size), refuses what is not
 * HTTP or is larger than allowed, and never mistakes a cut-off answer for a
 * whole one; URLs parse into host, port and base path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ctl_http.h"

#define MAX_BODY 1024

static int parse(const char *text, size_t len, int eof, struct ctl_http_response *r, char *err)
{
	return ctl_http_parse(text, len, eof, MAX_BODY, r, err, 256);
}

/* The whole text (len bytes) parses to status and body; every shorter
 * prefix asks for more without EOF, and is refused as cut off with EOF. */
static void expect_complete_n(const char *text, size_t len, int status, const char *body,
			      size_t body_len)
{
	struct ctl_http_response r;
	char err[256];
	for (size_t n = 0; n < len; n++) {
		int rc = parse(text, n, 0, &r, err);
		if (rc != CTL_HTTP_MORE)
			print_message("prefix of %zu bytes: %d (%s)\n", n, rc, err);
		assert_int_equal(rc, CTL_HTTP_MORE);
		assert_int_equal(parse(text, n, 1, &r, err), CTL_HTTP_PROTOCOL);
	}
	assert_int_equal(parse(text, len, 0, &r, err), 0);
	assert_int_equal(r.status, status);
	assert_int_equal(r.len, body_len);
	assert_memory_equal(r.body, body, body_len);
	assert_int_equal(r.body[r.len], '\0');
	ctl_http_response_free(&r);
}

#define expect_complete(text, status, body, body_len)                                       \
	expect_complete_n(text, sizeof(text) - 1, status, body, body_len)

static void expect_refused(const char *text, int eof, const char *reason)
{
	struct ctl_http_response r;
	char err[256] = "";
	int rc = parse(text, strlen(text), eof, &r, err);
	if (rc != CTL_HTTP_PROTOCOL || !strstr(err, reason))
		print_message("input: %s\nwant: %s\ngot: %d %s\n", text, reason, rc, err);
	assert_int_equal(rc, CTL_HTTP_PROTOCOL);
	assert_non_null(strstr(err, reason));
	assert_null(r.body);
}

static void content_length(void **state)
{
	(void)state;
	expect_complete("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			"Content-Length: 12\r\nConnection: close\r\n\r\n{\"total\":0}\n",
			200, "{\"total\":0}\n", 12);
	struct ctl_http_response r;
	char err[256];
	const char *text = "HTTP/1.1 404 Not Found\r\ncontent-type:  application/json \r\n"
			   "content-length: 2\r\n\r\n{}";
	assert_int_equal(parse(text, strlen(text), 0, &r, err), 0);
	assert_int_equal(r.status, 404);
	assert_string_equal(r.content_type, "application/json");
	ctl_http_response_free(&r);
	/* Bare LF line ends, no reason phrase, an empty body. */
	expect_complete("HTTP/1.0 204\nContent-Length: 0\n\n", 204, "", 0);
	/* 204 and 304 have no body, whatever the headers say. */
	text = "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"
	       "5\r\nhello\r\n0\r\n\r\n";
	assert_int_equal(parse(text, strlen(text), 0, &r, err), 0);
	assert_int_equal(r.len, 0);
	ctl_http_response_free(&r);
	/* A body with a NUL in it keeps its length. */
	expect_complete("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\na\0b", 200, "a\0b", 3);
}

static void chunked(void **state)
{
	(void)state;
	expect_complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			"5\r\nhello\r\n1;name=value\r\n \r\nA\r\n0123456789\r\n0\r\n"
			"X-Trailer: 1\r\n\r\n",
			200, "hello 0123456789", 16);
	/* Upper-case hex, LF only, no trailers. */
	expect_complete("HTTP/1.1 200 OK\nTransfer-Encoding: Chunked\n\n1F\n"
			"0123456789012345678901234567890\n0\n\n",
			200, "0123456789012345678901234567890", 31);
	/* Transfer-Encoding wins over Content-Length. */
	expect_complete(
	    "HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "2\r\nok\r\n0\r\n\r\n",
	    200, "ok", 2);
}

static void body_to_eof(void **state)
{
	(void)state;
	struct ctl_http_response r;
	char err[256];
	const char *text = "HTTP/1.1 200 OK\r\n\r\nuntil the end";
	assert_int_equal(parse(text, strlen(text), 0, &r, err), CTL_HTTP_MORE);
	assert_int_equal(parse(text, strlen(text), 1, &r, err), 0);
	assert_string_equal(r.body, "until the end");
	ctl_http_response_free(&r);
}

static void interim_skipped(void **state)
{
	(void)state;
	expect_complete("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
			"Content-Length: 2\r\n\r\n{}",
			201, "{}", 2);
}

static void broken(void **state)
{
	(void)state;
	expect_refused("SSH-2.0-OpenSSH_9.2\r\n\r\n", 0, "not an HTTP/1.x status line");
	expect_refused("HTTP/2 200\r\n\r\n", 0, "not an HTTP/1.x status line");
	expect_refused("HTTP/1.1 20 OK\r\n\r\n", 0, "not an HTTP/1.x status line");
	expect_refused("HTTP/1.1 200OK\r\n\r\n", 0, "not an HTTP/1.x status line");
	expect_refused("HTTP/1.1 101 Switching Protocols\r\n\r\n", 0, "unexpected status 101");
	expect_refused("HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", 0, "malformed header line");
	expect_refused("HTTP/1.1 200 OK\r\nName : value\r\n\r\n", 0, "malformed header line");
	expect_refused("HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n", 0, "malformed header line");
	expect_refused("HTTP/1.1 200 OK\r\nA: x\001y\r\n\r\n", 0, "control character");
	expect_refused("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, "is not a number");
	expect_refused("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", 0, "is not a number");
	expect_refused("HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx", 0, "is not a number");
	expect_refused("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", 0,
		       "two different Content-Length");
	expect_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0,
		       "is not supported");
	expect_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0,
		       "bad chunk size line");
	expect_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX0\r\n\r\n", 0,
		       "not followed by a line end");
	/* Cut off: the connection ended before the body did. */
	expect_refused("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 1,
		       "ends after 5 of 10");
	expect_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 1,
		       "ends inside its chunked body");
	expect_refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", 1,
		       "ends inside its trailers");
	expect_refused("HTTP/1.1 200 OK\r\nContent-Len", 1, "ends inside its headers");
	expect_refused("", 1, "ends inside its headers");
}

static void limits(void **state)
{
	(void)state;
	char text[256];
	/* A body over the limit is refused from its header, before it arrives. */
	snprintf(text, sizeof(text), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", MAX_BODY + 1);
	expect_refused(text, 0, "larger than the limit");
	expect_refused("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", 0,
		       "larger than the limit");
	expect_refused(
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n", 0,
	    "larger than the limit");
	/* Chunks that add up to more than the limit. */
	snprintf(text, sizeof(text), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n",
		 MAX_BODY);
	size_t n = strlen(text);
	char *big = malloc(n + MAX_BODY + 16);
	assert_non_null(big);
	memcpy(big, text, n);
	memset(big + n, 'x', MAX_BODY);
	memcpy(big + n + MAX_BODY, "\r\n1\r\n", 6);
	expect_refused(big, 0, "larger than the limit");
	/* No blank line within the header limit. */
	char *flood = malloc(CTL_HTTP_HEADER_MAX + 64);
	assert_non_null(flood);
	strcpy(flood, "HTTP/1.1 200 OK\r\n");
	for (size_t i = strlen(flood); i < CTL_HTTP_HEADER_MAX + 32; i += 6)
		memcpy(flood + i, "A: 1\r\n", 7);
	expect_refused(flood, 0, "headers larger than");
	free(flood);
	free(big);
}

static void url(void **state)
{
	(void)state;
	struct ctl_url u;
	char err[256];
	assert_int_equal(ctl_url_parse("https://127.0.0.1:8443", &u, err, sizeof(err)), 0);
	assert_string_equal(u.host, "127.0.0.1");
	assert_string_equal(u.port, "8443");
	assert_string_equal(u.base, "");
	assert_true(u.is_ip);
	assert_int_equal(ctl_url_parse("HTTPS://collector.corp.example/exfleet/", &u, err,
				       sizeof(err)),
			 0);
	assert_string_equal(u.host, "collector.corp.example");
	assert_string_equal(u.port, "443");
	assert_string_equal(u.base, "/exfleet");
	assert_false(u.is_ip);
	assert_int_equal(ctl_url_parse("https://[::1]:9443/", &u, err, sizeof(err)), 0);
	assert_string_equal(u.host, "::1");
	assert_string_equal(u.port, "9443");
	assert_true(u.is_ip);
	static const char *const bad[] = {
	    "collector:8443",    "http://127.0.0.1:8443", "https://",
	    "https://:8443",     "https://host:0",        "https://host:65536",
	    "https://host:84x3", "https://[::1",          "https://[nothere]:1",
	    "https://ho st:1",   "https://host:1?x=1",    "https://host/a b",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (ctl_url_parse(bad[i], &u, err, sizeof(err)) == 0)
			print_message("accepted: %s\n", bad[i]);
		assert_int_equal(ctl_url_parse(bad[i], &u, err, sizeof(err)), -1);
	}
	assert_non_null(strstr(err, "is not a URL"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(content_length), cmocka_unit_test(chunked),
		cmocka_unit_test(body_to_eof),    cmocka_unit_test(interim_skipped),
		cmocka_unit_test(broken),         cmocka_unit_test(limits),
		cmocka_unit_test(url),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
