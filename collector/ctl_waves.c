/* exfleetctl waves (import, list) and report waves: the migration plan and
 * its progress, through POST /api/v1/waves, GET /api/v1/waves and
 * GET /api/v1/waves/report. The collector parses plans and builds the
 * report; this only carries them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "ctl_http.h"
#include "status.h"
#include "util.h"

#define PLAN_MAX (16u << 20)

static const char waves_usage[] =
	"usage: exfleetctl waves import FILE.csv [--json] [connection]\n"
	"       exfleetctl waves list [--json | --csv] [connection]\n"
	"\n"
	"import replaces the wave plan with FILE.csv: a header host,wave,planned_date\n"
	"(in any order), then one host a line; planned_date is YYYY-MM-DD or empty.\n"
	"CRLF line ends, a UTF-8 BOM and quoted fields are accepted. The import is\n"
	"all or nothing: any bad line aborts it, and every bad line is reported\n"
	"with its line number (exit status 1). A plan overrides the wave label\n"
	"agents report. It needs an operator certificate.\n"
	"list shows each wave: planned date, hosts, how many were promoted, how\n"
	"many are in each status and how many are online, offline or never seen.\n"
	CTL_CONN_USAGE;

static const char report_usage[] =
	"usage: exfleetctl report waves [--wave WAVE] [--format table|csv|json|html]\n"
	"                               [--json] [--output FILE] [connection]\n"
	"\n"
	"The wave report: per wave, hosts, promoted, each status, percent done\n"
	"(promoted and HEALTHY or REPAIRED), median and 90th percentile of the time\n"
	"from promotion to detection and from detection to repair, and the hosts that\n"
	"need attention with their evidence. html is one standalone page that can be\n"
	"mailed or printed. Default: a table on standard output; --json is\n"
	"--format json. --output writes FILE whole or not at all.\n"
	CTL_CONN_USAGE;

static int waves_import(struct ctl_api *api, const char *file)
{
	char *text = NULL, err[512];
	size_t len;
	if (util_read_file(file, PLAN_MAX, &text, &len, err, sizeof(err)) < 0)
		return ctl_fail("waves import", "%s", err);
	/* The name the collector's messages use for the file. */
	const char *name = file;
	if (strlen(name) > 200 && strrchr(name, '/'))
		name = strrchr(name, '/') + 1;
	struct ctl_path path;
	ctl_path_init(&path, "/api/v1/waves", NULL);
	ctl_path_param(&path, "name", name);
	struct ctl_http_response r;
	int rc = ctl_api_call(api, "POST", path.text, "text/csv", text, len, &r);
	free(text);
	if (rc != CTL_OK)
		return rc;
	json_t *j = json_loadb(r.body, r.len, 0, NULL);
	json_t *error = json_object_get(j, "error");
	long long waves = (long long)json_integer_value(json_object_get(j, "waves"));
	if (r.status == 200 && json_is_object(j)) {
		if (api->json)
			ctl_print_json(j);
		else
			printf("imported %lld hosts in %lld wave%s from %s\n",
			       (long long)json_integer_value(json_object_get(j, "imported")), waves,
			       waves == 1 ? "" : "s", file);
	} else if (r.status >= 400 && json_is_array(json_object_get(error, "lines"))) {
		/* Every bad line, then what it means: nothing was imported. */
		size_t i;
		json_t *line;
		json_array_foreach(json_object_get(error, "lines"), i, line)
			fprintf(stderr, "%s\n", json_string_value(line));
		rc = ctl_fail("waves import", "%s",
			      ctl_str(error, "message", "the plan is invalid"));
	} else if (r.status >= 300) {
		rc = ctl_api_error(api, "POST", &r);
	} else {
		rc = ctl_fail("waves import", "the answer to POST %s is not JSON", path.text);
	}
	json_decref(j);
	ctl_http_response_free(&r);
	return rc;
}

/* The columns of waves list: the wave, then counts. */
static void waves_row(json_t *w, int csv)
{
	char n[24];
	json_t *by_status = json_object_get(w, "by_status");
	json_t *by_conn = json_object_get(w, "by_connectivity");
	const char *conn[] = {"ONLINE", "OFFLINE", "NEVER_SEEN"};
	if (csv) {
		ctl_csv(stdout, ctl_str(w, "wave", ""), 0);
		ctl_csv(stdout, ctl_str(w, "planned_date", ""), 0);
	} else {
		printf("%-10s %-10s", ctl_str(w, "wave", "(none)"),
		       ctl_str(w, "planned_date", "-"));
	}
	json_t *counts[2 + HOST_REPAIRING + 1 + 3];
	size_t k = 0;
	counts[k++] = json_object_get(w, "hosts");
	counts[k++] = json_object_get(w, "promoted");
	for (int s = HOST_HEALTHY; s <= HOST_REPAIRING; s++)
		counts[k++] = json_object_get(by_status, host_status_name((enum host_status)s));
	for (size_t i = 0; i < 3; i++)
		counts[k++] = json_object_get(by_conn, conn[i]);
	for (size_t i = 0; i < k; i++) {
		snprintf(n, sizeof(n), "%lld", (long long)json_integer_value(counts[i]));
		if (csv)
			ctl_csv(stdout, n, i + 1 == k);
		else
			printf(" %*s", i < 2 ? 5 : 8, n);
	}
	if (!csv)
		putchar('\n');
}

static int waves_list(struct ctl_api *api)
{
	json_t *items;
	int rc = ctl_api_get_items(api, "/api/v1/waves", 0, &items);
	if (rc != CTL_OK)
		return rc;
	if (api->json) {
		ctl_print_json(items);
	} else if (api->csv) {
		ctl_csv(stdout, "wave", 0);
		ctl_csv(stdout, "planned_date", 0);
		ctl_csv(stdout, "hosts", 0);
		ctl_csv(stdout, "promoted", 0);
		for (int s = HOST_HEALTHY; s <= HOST_REPAIRING; s++)
			ctl_csv(stdout, host_status_name((enum host_status)s), 0);
		ctl_csv(stdout, "ONLINE", 0);
		ctl_csv(stdout, "OFFLINE", 0);
		ctl_csv(stdout, "NEVER_SEEN", 1);
	} else if (json_array_size(items) == 0) {
		printf("(no waves: import a plan, or label agents with [agent] wave)\n");
	} else {
		printf("%-10s %-10s %5s %5s %8s %8s %8s %8s %8s %8s %8s %8s %8s %8s\n", "WAVE",
		       "PLANNED", "HOSTS", "PROM", "HEALTHY", "REPAIRED", "DEGRADED", "AT_RISK",
		       "AFFECTED", "NEEDS_SP", "REPAIRNG", "ONLINE", "OFFLINE", "NEVER");
	}
	size_t i;
	json_t *w;
	if (!api->json)
		json_array_foreach(items, i, w)
			waves_row(w, api->csv);
	json_decref(items);
	return CTL_OK;
}

int ctl_waves(int argc, char **argv)
{
	static const struct option opts[] = {CTL_JSON_OPTION, CTL_CSV_OPTION, CTL_CONN_OPTIONS,
					     {NULL, 0, NULL, 0}};
	struct ctl_api api = {.what = "waves", .help = "waves"};
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(waves_usage, stdout);
			return CTL_OK;
		}
		if (ctl_api_option(&api, c, argv) != CTL_OK)
			return CTL_USAGE;
	}
	int import = optind < argc && strcmp(argv[optind], "import") == 0;
	int list = optind < argc && strcmp(argv[optind], "list") == 0;
	if (!import && !list)
		return ctl_usage_error("waves", "waves",
				       "the subcommand is import FILE.csv or list");
	if (import && argc - optind != 2)
		return ctl_usage_error("waves import", "waves", "name one FILE.csv");
	if (list && argc - optind != 1)
		return ctl_usage_error("waves list", "waves", "unexpected argument '%s'",
				       argv[optind + 1]);
	if (import && api.csv)
		return ctl_usage_error("waves import", "waves", "--csv applies to waves list");
	api.what = import ? "waves import" : "waves list";
	int rc = ctl_api_connect(&api);
	if (rc == CTL_OK)
		rc = import ? waves_import(&api, argv[optind + 1]) : waves_list(&api);
	ctl_api_close(&api);
	return rc;
}

/* ---- report waves ---- */

static int report_waves(int argc, char **argv)
{
	static const struct option opts[] = {{"wave", required_argument, NULL, 'w'},
					     {"format", required_argument, NULL, 'f'},
					     {"output", required_argument, NULL, 'o'},
					     CTL_JSON_OPTION,
					     CTL_CONN_OPTIONS,
					     {NULL, 0, NULL, 0}};
	static const char *const formats[] = {"table", "csv", "json", "html"};
	struct ctl_api api = {.what = "report waves", .help = "report"};
	const char *wave = NULL, *output = NULL, *format = "table";
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'w':
			wave = optarg;
			break;
		case 'f':
			format = NULL;
			for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
				if (strcmp(optarg, formats[i]) == 0)
					format = formats[i];
			if (!format)
				return ctl_usage_error(
				    "report waves", "report",
				    "--format '%s' is not table, csv, json or html", optarg);
			break;
		case 'o':
			output = optarg;
			break;
		case 'h':
			fputs(report_usage, stdout);
			return CTL_OK;
		default:
			if (ctl_api_option(&api, c, argv) != CTL_OK)
				return CTL_USAGE;
		}
	}
	if (optind != argc)
		return ctl_usage_error("report waves", "report", "unexpected argument '%s'",
				       argv[optind]);
	if (api.json)
		format = "json";
	struct ctl_http_response r = {0};
	int rc = ctl_api_connect(&api);
	if (rc == CTL_OK) {
		struct ctl_path path;
		ctl_path_init(&path, "/api/v1/waves/report", NULL);
		ctl_path_param(&path, "wave", wave);
		ctl_path_param(&path, "format", format);
		rc = ctl_api_call(&api, "GET", path.text, NULL, NULL, 0, &r);
	}
	if (rc == CTL_OK && r.status != 200) {
		rc = ctl_api_error(&api, "GET", &r);
	} else if (rc == CTL_OK && output) {
		char err[512];
		if (util_write_file_atomic(output, r.body, r.len, 0644, err, sizeof(err)) < 0)
			rc = ctl_fail("report waves", "%s", err);
		else
			fprintf(stderr, "wave report written to %s\n", output);
	} else if (rc == CTL_OK) {
		if (fwrite(r.body, 1, r.len, stdout) != r.len || fflush(stdout) != 0)
			rc = ctl_fail("report waves", "writing the report failed");
	}
	ctl_http_response_free(&r);
	ctl_api_close(&api);
	return rc;
}

int ctl_report(int argc, char **argv)
{
	if (ctl_wants_help(argc, argv)) {
		fputs(report_usage, stdout);
		return CTL_OK;
	}
	if (argc < 2 || strcmp(argv[1], "waves") != 0)
		return ctl_usage_error("report", "report", "the report is 'waves'");
	return report_waves(argc - 1, argv + 1);
}
