/* libFuzzer harness for exfleetctl's HTTP response parser: any bytes give a
 * response whose body keeps to the limit and ends in a NUL, or an error with
 * no body and a printable message. With the connection ended it never asks
 * for more, and a response complete before the end is the same after it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_http.h"

#define MAX_BODY 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int rc, const struct ctl_http_response *r, const char *err)
{
	if (rc == 0) {
		if (!r->body || r->len > MAX_BODY || r->body[r->len] != '\0' || r->status < 200 ||
		    r->status > 999)
			abort();
		return;
	}
	if (r->body || (rc != CTL_HTTP_MORE && rc != CTL_HTTP_PROTOCOL))
		abort();
	for (const char *c = err; rc == CTL_HTTP_PROTOCOL && *c; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Exact size, no NUL after it: the parser must keep to len. */
	char *text = malloc(size ? size : 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	struct ctl_http_response open_r, ended_r;
	char err[256] = "";
	int open = ctl_http_parse(text, size, 0, MAX_BODY, &open_r, err, sizeof(err));
	check(open, &open_r, err);
	err[0] = '\0';
	int ended = ctl_http_parse(text, size, 1, MAX_BODY, &ended_r, err, sizeof(err));
	check(ended, &ended_r, err);
	if (ended == CTL_HTTP_MORE)
		abort();
	if (open == 0 && (ended != 0 || open_r.status != ended_r.status ||
			  open_r.len != ended_r.len ||
			  memcmp(open_r.body, ended_r.body, open_r.len) != 0))
		abort();
	ctl_http_response_free(&open_r);
	ctl_http_response_free(&ended_r);
	free(text);
	return 0;
}
