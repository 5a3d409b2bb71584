/* exfleetctl dashboard: a sign-in link for the collector's web dashboard.
 * The browser has no client certificate; exfleetctl, which has one, asks
 * the collector for a short-lived link that works once
 * (POST /api/v1/signin-links) and prints it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "util.h"

static const char dashboard_usage[] =
	"usage: exfleetctl dashboard [--json] [connection]\n"
	"\n"
	"Prints a link that signs you in to the collector's web dashboard with the\n"
	"name and role of your certificate (viewer or operator). Open it soon: it\n"
	"is valid for a few minutes and works once. Anyone who has the link before\n"
	"you use it can sign in as you, so do not mail or paste it anywhere.\n"
	"--json prints the collector's answer with the whole link added as \"url\".\n"
	CTL_CONN_USAGE;

int ctl_dashboard(int argc, char **argv)
{
	static const struct option opts[] = {CTL_JSON_OPTION, CTL_CONN_OPTIONS, {NULL, 0, NULL, 0}};
	struct ctl_api api = {.what = "dashboard"};
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(dashboard_usage, stdout);
			return CTL_OK;
		}
		if (ctl_api_option(&api, c, argv) != CTL_OK)
			return CTL_USAGE;
	}
	if (optind < argc)
		return ctl_usage_error("dashboard", "dashboard", "unexpected argument '%s'",
				       argv[optind]);
	json_t *link = NULL;
	int rc = ctl_api_connect(&api);
	if (rc == CTL_OK)
		rc = ctl_api_post_json(&api, "/api/v1/signin-links", NULL, &link);
	const char *path = ctl_str(link, "path", NULL);
	if (rc == CTL_OK && (!path || path[0] != '/'))
		rc = ctl_fail("dashboard", "the collector's answer has no sign-in path");
	if (rc == CTL_OK) {
		/* The link is the URL we reached the collector at, and its path. */
		size_t n = strlen(api.url_used);
		while (n > 0 && api.url_used[n - 1] == '/')
			n--;
		char *url = malloc(n + strlen(path) + 1);
		if (!url) {
			rc = ctl_fail("dashboard", "out of memory");
			goto out;
		}
		memcpy(url, api.url_used, n);
		strcpy(url + n, path);
		json_int_t seconds = json_integer_value(json_object_get(link, "expires_in"));
		int64_t expires;
		if (!seconds && ctl_parse_time(ctl_str(link, "expires_at", ""), &expires) == 0)
			seconds = (json_int_t)((expires - util_now_ms()) / 1000);
		long minutes = (long)((seconds + 59) / 60);
		if (api.json) {
			json_object_set_new(link, "url", json_string(url));
			ctl_print_json(link);
		} else if (minutes > 0) {
			printf("Open this link within %ld minute%s; it works once:\n  %s\n",
			       minutes, minutes == 1 ? "" : "s", url);
		} else {
			printf("Open this link before %s; it works once:\n  %s\n",
			       ctl_str(link, "expires_at", "it expires"), url);
		}
		free(url);
	}
out:
	json_decref(link);
	ctl_api_close(&api);
	return rc;
}
