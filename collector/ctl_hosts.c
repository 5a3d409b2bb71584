/* exfleetctl hosts and host: the fleet as the collector classifies it, from
 * GET /api/v1/hosts and /api/v1/hosts/{id}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctl.h"
#include "status.h"

static const char hosts_usage[] =
	"usage: exfleetctl hosts [--status STATUS] [--connectivity C] [--wave WAVE]\n"
	"                        [--site SITE] [--json | --csv] [connection]\n"
	"\n"
	"Every host the collector knows (connected, or in the wave plan), with its\n"
	"status, connectivity and first piece of evidence. STATUS is one of\n"
	"HEALTHY, REPAIRED, DEGRADED, AT_RISK, AFFECTED, NEEDS_SP_REINSTALL,\n"
	"REPAIRING, or NEVER_SEEN (no status yet); C is ONLINE, OFFLINE or\n"
	"NEVER_SEEN. --json prints the API's host objects as one array; --csv\n"
	"one line a host with all the evidence.\n"
	CTL_CONN_USAGE;

static const char host_usage[] =
	"usage: exfleetctl host HOST_ID [--json] [connection]\n"
	"\n"
	"One host: its status with all the evidence, connectivity, role and\n"
	"promotion, its services with their accounts and rights, the status\n"
	"history, recent events and commands. --json prints the API's object.\n"
	"A host the collector does not know is an error (exit status 1).\n"
	CTL_CONN_USAGE;

/* The evidence lines joined by sep; "" when none. */
static char *evidence_text(json_t *host, const char *sep, int first_only)
{
	json_t *list = json_object_get(host, "evidence");
	size_t len = 1, i;
	json_t *line;
	json_array_foreach(list, i, line)
		len += strlen(json_string_value(line) ? json_string_value(line) : "") + strlen(sep);
	char *out = calloc(1, len);
	if (!out)
		return NULL;
	json_array_foreach(list, i, line) {
		if (i)
			strcat(out, sep);
		strcat(out, json_string_value(line) ? json_string_value(line) : "");
		if (first_only)
			break;
	}
	return out;
}

static void hosts_table(json_t *items)
{
	char since[32];
	size_t i;
	json_t *h;
	printf("%-12s %-6s %-10s %-18s %-10s %-20s %s\n", "HOST", "WAVE", "SITE", "STATUS",
	       "CONNECTED", "SINCE", "EVIDENCE");
	json_array_foreach(items, i, h) {
		char *evidence = evidence_text(h, "", 1);
		printf("%-12s %-6s %-10s %-18s %-10s %-20s %s\n", ctl_str(h, "host_id", "?"),
		       ctl_str(h, "wave", "-"), ctl_str(h, "site", "-"), ctl_str(h, "status", "-"),
		       ctl_str(h, "connectivity", "-"),
		       ctl_time(h, "status_since", since, sizeof(since)),
		       evidence ? evidence : "");
		free(evidence);
	}
}

static void hosts_csv(json_t *items)
{
	static const char *const columns[] = {"host_id", "wave",  "site",        "planned_date",
					      "status",  "status_since", "connectivity",
					      "last_seen", "promoted_at", "evidence"};
	size_t n = sizeof(columns) / sizeof(columns[0]), i;
	json_t *h;
	for (size_t k = 0; k < n; k++)
		ctl_csv(stdout, columns[k], k + 1 == n);
	json_array_foreach(items, i, h) {
		char when[32];
		for (size_t k = 0; k + 1 < n; k++) {
			json_t *v = json_object_get(h, columns[k]);
			ctl_csv(stdout,
				json_is_integer(v) ? ctl_time(h, columns[k], when, sizeof(when))
						   : json_string_value(v),
				0);
		}
		char *evidence = evidence_text(h, "; ", 0);
		ctl_csv(stdout, evidence, 1);
		free(evidence);
	}
}

int ctl_hosts(int argc, char **argv)
{
	static const struct option opts[] = {{"status", required_argument, NULL, 's'},
					     {"connectivity", required_argument, NULL, 'c'},
					     {"wave", required_argument, NULL, 'w'},
					     {"site", required_argument, NULL, 'S'},
					     CTL_JSON_OPTION,
					     CTL_CSV_OPTION,
					     CTL_CONN_OPTIONS,
					     {NULL, 0, NULL, 0}};
	struct ctl_api api = {.what = "hosts"};
	const char *status = NULL, *connectivity = NULL, *wave = NULL, *site = NULL;
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			status = optarg;
			break;
		case 'c':
			connectivity = optarg;
			break;
		case 'w':
			wave = optarg;
			break;
		case 'S':
			site = optarg;
			break;
		case 'h':
			fputs(hosts_usage, stdout);
			return CTL_OK;
		default:
			if (ctl_api_option(&api, c, argv) != CTL_OK)
				return CTL_USAGE;
		}
	}
	if (optind < argc)
		return ctl_usage_error("hosts", "hosts", "unexpected argument '%s'", argv[optind]);
	if (status && strcasecmp(status, "NEVER_SEEN") == 0) {
		status = "NEVER_SEEN";
	} else if (status) {
		int s = host_status_parse(status);
		if (s < 0)
			return ctl_usage_error("hosts", "hosts", "'%s' is not a status", status);
		status = host_status_name((enum host_status)s);
	}
	if (connectivity && strcasecmp(connectivity, "ONLINE") != 0 &&
	    strcasecmp(connectivity, "OFFLINE") != 0 && strcasecmp(connectivity, "NEVER_SEEN") != 0)
		return ctl_usage_error("hosts", "hosts",
				       "--connectivity '%s' is not ONLINE, OFFLINE or NEVER_SEEN",
				       connectivity);
	json_t *items = NULL;
	int rc = ctl_api_connect(&api);
	if (rc == CTL_OK) {
		struct ctl_path path;
		ctl_path_init(&path, "/api/v1/hosts", NULL);
		ctl_path_param(&path, "status", status);
		ctl_path_param(&path, "connectivity", connectivity);
		ctl_path_param(&path, "wave", wave);
		ctl_path_param(&path, "site", site);
		rc = ctl_api_get_items(&api, path.text, 0, &items);
	}
	if (rc == CTL_OK)
		ctl_api_print_list(&api, items, hosts_csv, hosts_table,
				   status || connectivity || wave || site ? "(no hosts match)"
									   : "(no hosts yet)");
	json_decref(items);
	ctl_api_close(&api);
	return rc;
}

/* ---- host ---- */

/* "SERVICE_RUNNING" -> "running": an API enum name for people. */
static const char *enum_word(json_t *o, const char *key, const char *prefix, char *buf,
			     size_t len)
{
	const char *name = ctl_str(o, key, "?");
	if (strncmp(name, prefix, strlen(prefix)) == 0)
		name += strlen(prefix);
	size_t i;
	for (i = 0; name[i] && i + 1 < len; i++)
		buf[i] = name[i] == '_' ? ' ' : (char)(name[i] | 0x20);
	buf[i] = '\0';
	return buf;
}

/* "(N more: exfleetctl ...)" when a section shows only the newest. */
static void more(json_t *section, const char *hint)
{
	size_t shown = json_array_size(json_object_get(section, "items"));
	json_int_t total = json_integer_value(json_object_get(section, "total"));
	if (total > (json_int_t)shown)
		printf("  (%lld more: %s)\n", (long long)(total - (json_int_t)shown), hint);
}

static void print_host(json_t *h)
{
	char a[32], b[32], word[32], hint[128];
	const char *id = ctl_str(h, "host_id", "?");
	printf("host      %s\n", id);
	printf("status    %s since %s\n", ctl_str(h, "status", "-"),
	       ctl_time(h, "status_since", a, sizeof(a)));
	json_t *line;
	size_t i;
	json_array_foreach(json_object_get(h, "evidence"), i, line)
		printf("          - %s\n", json_string_value(line));
	printf("connected %s (last seen %s)\n", ctl_str(h, "connectivity", "-"),
	       ctl_time(h, "last_seen", a, sizeof(a)));
	printf("wave      %s, site %s\n", ctl_str(h, "wave", "-"), ctl_str(h, "site", "-"));
	const char *role = ctl_str(h, "role", NULL);
	size_t rlen = role ? strlen(role) : 0;
	printf("role      %s of %s; promoted %s\n",
	       !role ? "unknown" : rlen > 3 && strcmp(role + rlen - 3, "_DC") == 0
				       ? "domain controller"
				       : "member/standalone server",
	       ctl_str(h, "domain", "?"), ctl_time(h, "promoted_at", b, sizeof(b)));
	json_t *sp = json_object_get(h, "exchange_sp");
	printf("exchange  %s SP%lld\n", ctl_str(h, "exchange_version", "?"),
	       (long long)json_integer_value(sp));

	printf("\nservices\n");
	json_t *svc;
	json_array_foreach(json_object_get(h, "services"), i, svc) {
		/* A builtin account holds every right: no need to list them. */
		int builtin = strcmp(ctl_str(svc, "account_status", ""), "ACCOUNT_BUILTIN") == 0;
		char *rights = builtin ? strdup("(builtin account: every right)")
				       : json_dumps(json_object_get(svc, "rights"), JSON_COMPACT);
		printf("  %-14s %-8s exit %-5lld %-22s rights: %s\n", ctl_str(svc, "name", "?"),
		       enum_word(svc, "state", "SERVICE_", word, sizeof(word)),
		       (long long)json_integer_value(json_object_get(svc, "win32_exit_code")),
		       ctl_str(svc, "logon_account", "?"), rights ? rights : "[]");
		free(rights);
	}
	printf("\nstatus history\n");
	json_t *section = json_object_get(h, "status_history"), *item;
	json_array_foreach(json_object_get(section, "items"), i, item) {
		printf("  %s  %s\n", ctl_time(item, "at", a, sizeof(a)),
		       ctl_str(item, "status", "?"));
	}
	more(section, "exfleetctl host --json");
	printf("\nrecent events\n");
	section = json_object_get(h, "recent_events");
	json_array_foreach(json_object_get(section, "items"), i, item) {
		printf("  %s  %-24s %5lld  %s\n", ctl_time(item, "time_generated", a, sizeof(a)),
		       ctl_str(item, "source", "?"),
		       (long long)json_integer_value(json_object_get(item, "event_id")),
		       ctl_str(item, "message", ""));
	}
	snprintf(hint, sizeof(hint), "exfleetctl events --host %s", id);
	more(section, hint);
	printf("\ncommands\n");
	section = json_object_get(h, "commands");
	json_array_foreach(json_object_get(section, "items"), i, item) {
		json_t *result = json_object_get(item, "result");
		printf("  %s  %-24s %-10s %s\n", ctl_str(item, "command_id", "?"),
		       ctl_str(item, "action", "?"), ctl_str(item, "state", "?"),
		       ctl_str(result, "reason", ""));
	}
	snprintf(hint, sizeof(hint), "exfleetctl commands --host %s", id);
	more(section, hint);
}

int ctl_host(int argc, char **argv)
{
	static const struct option opts[] = {CTL_JSON_OPTION, CTL_CONN_OPTIONS, {NULL, 0, NULL, 0}};
	struct ctl_api api = {.what = "host"};
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(host_usage, stdout);
			return CTL_OK;
		}
		if (ctl_api_option(&api, c, argv) != CTL_OK)
			return CTL_USAGE;
	}
	if (optind + 1 != argc)
		return ctl_usage_error("host", "host", "name one HOST_ID");
	json_t *host = NULL;
	int rc = ctl_api_connect(&api);
	if (rc == CTL_OK) {
		struct ctl_path path;
		ctl_path_init(&path, "/api/v1/hosts", argv[optind]);
		rc = ctl_api_get(&api, path.text, &host);
	}
	if (rc == CTL_OK) {
		if (api.json)
			ctl_print_json(host);
		else
			print_host(host);
	}
	json_decref(host);
	ctl_api_close(&api);
	return rc;
}
