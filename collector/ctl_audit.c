/* exfleetctl audit: the append-only log of commands and their outcomes
 * (GET /api/v1/audit), and the check of its hash chain, which the
 * collector runs over its store (GET /api/v1/audit/verify). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"


static const char audit_usage[] =
	"usage: exfleetctl audit [--limit N] [--json | --csv] [connection]\n"
	"       exfleetctl audit verify [--json] [connection]\n"
	"\n"
	"Lists the audit log, newest first: every command submitted (by whom, for\n"
	"which host), delivered or expired, and every result an agent sent,\n"
	"refusals with their reason. --limit N shows the newest N (default 100;\n"
	"0 shows all). Each entry holds the hash of the one before; verify has the\n"
	"collector recompute the chain and names the first entry that was changed,\n"
	"removed or inserted (exit status 1), or says the log is whole.\n"
	CTL_CONN_USAGE;

/* detail is JSON text or a JSON value; either way one line. */
static char *detail_text(json_t *entry)
{
	json_t *d = json_object_get(entry, "detail");
	if (json_is_string(d))
		return strdup(json_string_value(d));
	return d && !json_is_null(d) ? json_dumps(d, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("");
}

static void audit_table(json_t *items, int csv)
{
	char when[32], id[24];
	size_t i;
	json_t *e;
	if (csv) {
		const char *columns[] = {"id",     "at",        "actor", "action",
					 "detail", "prev_hash", "hash"};
		for (size_t k = 0; k < 7; k++)
			ctl_csv(stdout, columns[k], k == 6);
	} else {
		printf("%6s  %-20s  %-14s %-20s %s\n", "ID", "AT", "ACTOR", "ACTION", "DETAIL");
	}
	json_array_foreach(items, i, e) {
		char *detail = detail_text(e);
		snprintf(id, sizeof(id), "%lld",
			 (long long)json_integer_value(json_object_get(e, "id")));
		if (csv) {
			ctl_csv(stdout, id, 0);
			ctl_csv(stdout, ctl_time(e, "at", when, sizeof(when)), 0);
			ctl_csv(stdout, ctl_str(e, "actor", ""), 0);
			ctl_csv(stdout, ctl_str(e, "action", ""), 0);
			ctl_csv(stdout, detail, 0);
			ctl_csv(stdout, ctl_str(e, "prev_hash", ""), 0);
			ctl_csv(stdout, ctl_str(e, "hash", ""), 1);
		} else {
			printf("%6s  %-20s  %-14s %-20s %s\n", id,
			       ctl_time(e, "at", when, sizeof(when)), ctl_str(e, "actor", ""),
			       ctl_str(e, "action", ""), detail ? detail : "");
		}
		free(detail);
	}
}

static int audit_verify(struct ctl_api *api)
{
	json_t *j;
	int rc = ctl_api_get(api, "/api/v1/audit/verify", &j);
	if (rc != CTL_OK)
		return rc;
	long long entries = (long long)json_integer_value(json_object_get(j, "entries"));
	json_t *intact = json_object_get(j, "intact");
	if (api->json)
		ctl_print_json(j);
	if (!json_is_boolean(intact))
		rc = ctl_fail("audit verify", "the collector's answer has no \"intact\"");
	else if (json_is_false(intact))
		rc = ctl_fail("audit verify",
			      "entry %lld does not match the chain (changed, or an entry before it "
			      "was removed or inserted); %lld entries read",
			      (long long)json_integer_value(json_object_get(j, "first_bad")),
			      entries);
	else if (!api->json)
		printf("the audit log is whole: %lld entries, each linked to the one before\n",
		       entries);
	json_decref(j);
	return rc;
}

int ctl_audit(int argc, char **argv)
{
	static const struct option opts[] = {{"limit", required_argument, NULL, 'l'},
					     CTL_JSON_OPTION,
					     CTL_CSV_OPTION,
					     CTL_CONN_OPTIONS,
					     {NULL, 0, NULL, 0}};
	struct ctl_api api = {.what = "audit", .help = "audit"};
	long limit = CTL_LIST_DEFAULT;
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'l') {
			if (ctl_api_limit(&api, optarg, &limit) != CTL_OK)
				return CTL_USAGE;
		} else if (c == 'h') {
			fputs(audit_usage, stdout);
			return CTL_OK;
		} else if (ctl_api_option(&api, c, argv) != CTL_OK) {
			return CTL_USAGE;
		}
	}
	int verify = optind < argc && strcmp(argv[optind], "verify") == 0;
	if (argc - optind != verify)
		return ctl_usage_error("audit", "audit", "unexpected argument '%s'", argv[optind]);
	if (verify && api.csv)
		return ctl_usage_error("audit verify", "audit", "--csv applies to the list");
	api.what = verify ? "audit verify" : "audit";
	json_t *items = NULL;
	int rc = ctl_api_connect(&api);
	if (rc == CTL_OK && verify) {
		rc = audit_verify(&api);
	} else if (rc == CTL_OK) {
		rc = ctl_api_get_items(&api, "/api/v1/audit", (size_t)limit, &items);
		if (rc == CTL_OK && api.json)
			ctl_print_json(items);
		else if (rc == CTL_OK)
			audit_table(items, api.csv);
	}
	json_decref(items);
	ctl_api_close(&api);
	return rc;
}
