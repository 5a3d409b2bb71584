/* exfleetctl events: the event-log records agents forwarded, newest first,
 * from GET /api/v1/events. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "util.h"


static const char events_usage[] =
	"usage: exfleetctl events [--host ID] [--source SOURCE] [--id EVENT_ID]\n"
	"                         [--since TIME] [--until TIME] [--limit N]\n"
	"                         [--json | --csv] [connection]\n"
	"\n"
	"Event-log records the agents forwarded (errors, warnings and the\n"
	"auth-privilege events), newest first. --source and --id match exactly\n"
	"(e.g. --source MSExchangePOP3 --id 13003). TIME is ISO-8601 UTC\n"
	"(2026-11-29T10:02:11Z or 2026-11-29), milliseconds since 1970, or a\n"
	"duration back from now (30m, 2h, 7d); --since is inclusive, --until not.\n"
	"--limit N shows the newest N (default 100; 0 shows all).\n"
	CTL_CONN_USAGE;

/* A time for the API; a duration with its unit means that long ago. */
static const char *time_param(const char *text, char *buf, size_t len)
{
	int64_t ms;
	size_t n = strlen(text);
	if (n && isalpha((unsigned char)text[n - 1]) && text[n - 1] != 'Z' &&
	    ctl_parse_duration(text, &ms) == 0) {
		util_format_time(util_now_ms() - ms, buf, len);
		return buf;
	}
	return text;
}

static void events_table(json_t *items)
{
	char when[32], type[16];
	size_t i;
	json_t *e;
	printf("%-20s %-12s %-24s %5s  %-8s %s\n", "TIME", "HOST", "SOURCE", "ID", "TYPE",
	       "MESSAGE");
	json_array_foreach(items, i, e) {
		const char *t = ctl_str(e, "type", "?");
		if (strncmp(t, "EVENT_", 6) == 0)
			t += 6;
		size_t k;
		for (k = 0; t[k] && k + 1 < sizeof(type); k++)
			type[k] = t[k] == '_' ? ' ' : (char)tolower((unsigned char)t[k]);
		type[k] = '\0';
		printf("%-20s %-12s %-24s %5lld  %-8s %s\n",
		       ctl_time(e, "time_generated", when, sizeof(when)),
		       ctl_str(e, "host_id", "?"), ctl_str(e, "source", "?"),
		       (long long)json_integer_value(json_object_get(e, "event_id")), type,
		       ctl_str(e, "message", ""));
	}
}

static void events_csv(json_t *items)
{
	static const char *const columns[] = {
		"time_generated", "host_id",  "log",     "source",        "event_id",
		"type",           "category_name", "computer", "record_number", "message"};
	size_t n = sizeof(columns) / sizeof(columns[0]), i;
	json_t *e;
	for (size_t k = 0; k < n; k++)
		ctl_csv(stdout, columns[k], k + 1 == n);
	json_array_foreach(items, i, e) {
		for (size_t k = 0; k < n; k++) {
			char text[32];
			json_t *v = json_object_get(e, columns[k]);
			const char *s = json_string_value(v);
			if (k == 0)
				s = ctl_time(e, columns[k], text, sizeof(text));
			else if (json_is_integer(v)) {
				snprintf(text, sizeof(text), "%lld",
					 (long long)json_integer_value(v));
				s = text;
			}
			ctl_csv(stdout, s, k + 1 == n);
		}
	}
}

int ctl_events(int argc, char **argv)
{
	static const struct option opts[] = {{"host", required_argument, NULL, 'H'},
					     {"source", required_argument, NULL, 's'},
					     {"id", required_argument, NULL, 'i'},
					     {"since", required_argument, NULL, 'S'},
					     {"until", required_argument, NULL, 'U'},
					     {"limit", required_argument, NULL, 'l'},
					     CTL_JSON_OPTION,
					     CTL_CSV_OPTION,
					     CTL_CONN_OPTIONS,
					     {NULL, 0, NULL, 0}};
	struct ctl_api api = {.what = "events"};
	const char *host = NULL, *source = NULL, *id = NULL, *since = NULL, *until = NULL;
	char since_buf[32], until_buf[32];
	long limit = CTL_LIST_DEFAULT;
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'H':
			host = optarg;
			break;
		case 's':
			source = optarg;
			break;
		case 'i':
			id = optarg;
			if (!*id || strspn(id, "0123456789") != strlen(id) || strlen(id) > 10)
				return ctl_usage_error("events", "events",
						       "--id '%s' is not an event id (a number)",
						       id);
			break;
		case 'S':
			since = time_param(optarg, since_buf, sizeof(since_buf));
			break;
		case 'U':
			until = time_param(optarg, until_buf, sizeof(until_buf));
			break;
		case 'l':
			if (ctl_api_limit(&api, optarg, &limit) != CTL_OK)
				return CTL_USAGE;
			break;
		case 'h':
			fputs(events_usage, stdout);
			return CTL_OK;
		default:
			if (ctl_api_option(&api, c, argv) != CTL_OK)
				return CTL_USAGE;
		}
	}
	if (optind < argc)
		return ctl_usage_error("events", "events", "unexpected argument '%s'",
				       argv[optind]);
	json_t *items = NULL;
	int rc = ctl_api_connect(&api);
	if (rc == CTL_OK) {
		struct ctl_path path;
		ctl_path_init(&path, "/api/v1/events", NULL);
		ctl_path_param(&path, "host", host);
		ctl_path_param(&path, "source", source);
		ctl_path_param(&path, "id", id);
		ctl_path_param(&path, "since", since);
		ctl_path_param(&path, "until", until);
		rc = ctl_api_get_items(&api, path.text, (size_t)limit, &items);
	}
	if (rc == CTL_OK)
		ctl_api_print_list(&api, items, events_csv, events_table, "(no events match)");
	json_decref(items);
	ctl_api_close(&api);
	return rc;
}
