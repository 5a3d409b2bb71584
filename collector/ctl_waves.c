/* exfleetctl waves (import, list) and report waves: the migration plan and
 * its progress. Like hosts and host, they use the collector's store file
 * directly until the collector's API serves operators. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ctl.h"
#include "report.h"
#include "status.h"
#include "store.h"
#include "util.h"
#include "waves.h"

#define DEFAULT_STORE "collector.db"
#define HEARTBEAT_MS 30000
#define PLAN_MAX (16u << 20)

static const char waves_usage[] =
	"usage: exfleetctl waves import FILE.csv [--store FILE]\n"
	"       exfleetctl waves list [--store FILE]\n"
	"\n"
	"import replaces the wave plan with FILE.csv: a header host,wave,planned_date\n"
	"(in any order), then one host a line; planned_date is YYYY-MM-DD or empty.\n"
	"CRLF line ends, a UTF-8 BOM and quoted fields are accepted. The import is\n"
	"all or nothing: any bad line aborts it, and every bad line is reported\n"
	"with its line number. A plan overrides the wave label agents report.\n"
	"list shows each wave with its hosts' statuses.\n";

static const char report_usage[] =
	"usage: exfleetctl report waves [--wave WAVE] [--format table|csv|json|html]\n"
	"                               [--output FILE] [--store FILE]\n"
	"\n"
	"The wave report: per wave, hosts, promoted, each status, percent done\n"
	"(promoted and HEALTHY or REPAIRED), median and 90th percentile of the time\n"
	"from promotion to detection and from detection to repair, and the hosts that\n"
	"need attention with their evidence. html is one standalone page that can be\n"
	"mailed or printed. Default: a table on standard output.\n";

static int waves_import(const char *file, const char *path)
{
	char *text = NULL;
	size_t len;
	char err[512];
	if (util_read_file(file, PLAN_MAX, &text, &len, err, sizeof(err)) < 0)
		return ctl_fail("waves import", "%s", err);
	struct wave_plan plan = {0};
	struct wave_errors errors = {0};
	int rc = waves_parse(file, text, len, &plan, &errors);
	free(text);
	if (rc < 0) {
		for (size_t i = 0; i < errors.count; i++)
			fprintf(stderr, "%s\n", errors.lines[i]);
		fprintf(stderr, "exfleetctl waves import: %s: %zu bad line%s; nothing was imported\n",
			file, errors.total, errors.total == 1 ? "" : "s");
		wave_errors_free(&errors);
		wave_plan_free(&plan);
		return CTL_FAILED;
	}
	wave_errors_free(&errors);
	struct store_wave *rows = calloc(plan.count ? plan.count : 1, sizeof(*rows));
	struct store *st = NULL;
	rc = CTL_FAILED;
	if (!rows) {
		ctl_fail("waves import", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < plan.count; i++) {
		rows[i].host_id = plan.entries[i].host_id;
		rows[i].wave = plan.entries[i].wave;
		rows[i].planned_date = plan.entries[i].planned_date;
	}
	if (ctl_open_store("waves import", path, &st) != CTL_OK)
		goto out;
	if (store_import_waves(st, rows, plan.count, err, sizeof(err)) < 0) {
		ctl_fail("waves import", "%s", err);
		goto out;
	}
	printf("imported %zu hosts from %s\n", plan.count, file);
	rc = CTL_OK;
out:
	if (st)
		store_close_reader(st);
	free(rows);
	wave_plan_free(&plan);
	return rc;
}

/* ---- the report's input, from the store ---- */

struct report_input {
	struct report_host *hosts;
	size_t n, cap;
	json_t *keep; /* owns the strings the hosts point at */
	int failed;
};

static const char *keep_string(struct report_input *in, const char *s)
{
	if (!s)
		return NULL;
	json_t *j = json_string(s);
	if (!j) {
		in->failed = 1;
		return NULL;
	}
	json_array_append_new(in->keep, j);
	return json_string_value(j);
}

static void report_row_cb(const struct store_row *row, void *arg)
{
	struct report_input *in = arg;
	if (in->n == in->cap) {
		size_t cap = in->cap ? in->cap * 2 : 64;
		struct report_host *grown = realloc(in->hosts, cap * sizeof(*grown));
		if (!grown) {
			in->failed = 1;
			return;
		}
		in->hosts = grown;
		in->cap = cap;
	}
	struct report_host *h = &in->hosts[in->n++];
	memset(h, 0, sizeof(*h));
	h->host_id = keep_string(in, ctl_value(row, "host_id"));
	h->wave = keep_string(in, ctl_value(row, "wave"));
	h->site = keep_string(in, ctl_value(row, "site"));
	h->status = keep_string(in, ctl_value(row, "status"));
	h->planned_date = keep_string(in, ctl_value(row, "planned_date"));
	int64_t seen = ctl_value_int(row, "last_seen");
	h->connectivity = connectivity_name(connectivity_of(seen, 1, util_now_ms(), HEARTBEAT_MS));
	h->promoted_at_ms = ctl_value_int(row, "promoted_at");
	h->detected_at_ms = ctl_value_int(row, "detected_at");
	h->repaired_at_ms = ctl_value_int(row, "repaired_at");
	/* Evidence: a JSON array kept whole; the strings stay valid with it. */
	const char *ev = ctl_value(row, "evidence");
	json_t *a = ev ? json_loads(ev, 0, NULL) : NULL;
	if (json_is_array(a) && json_array_size(a) > 0) {
		size_t k = json_array_size(a);
		json_t *ptrs = json_array();
		const char **lines = calloc(k, sizeof(char *));
		if (!lines) {
			in->failed = 1;
		} else {
			for (size_t i = 0; i < k; i++)
				lines[i] = json_string_value(json_array_get(a, i));
			h->evidence = lines;
			h->n_evidence = k;
		}
		json_decref(ptrs);
		json_array_append_new(in->keep, a);
	} else {
		json_decref(a);
	}
}

static int report_waves(int argc, char **argv)
{
	static const struct option opts[] = {{"wave", required_argument, NULL, 'w'},
					     {"format", required_argument, NULL, 'f'},
					     {"output", required_argument, NULL, 'o'},
					     {"store", required_argument, NULL, 'd'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *wave = NULL, *output = NULL, *path = DEFAULT_STORE;
	int format = REPORT_TABLE, c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'w':
			wave = optarg;
			break;
		case 'f':
			format = report_format_parse(optarg);
			if (format < 0)
				return ctl_usage_error("report waves", "report",
						       "--format '%s' is not table, csv, json or html",
						       optarg);
			break;
		case 'o':
			output = optarg;
			break;
		case 'd':
			path = optarg;
			break;
		case 'h':
			fputs(report_usage, stdout);
			return CTL_OK;
		default:
			return ctl_usage_error("report waves", "report", "unknown option");
		}
	}
	if (optind != argc)
		return ctl_usage_error("report waves", "report", "unexpected argument '%s'",
				       argv[optind]);
	struct store *st;
	if (ctl_open_store("report waves", path, &st) != CTL_OK)
		return CTL_FAILED;
	struct report_input in = {.keep = json_array()};
	char err[512];
	int rc = store_view(st, STORE_REPORT, NULL, NULL, wave, report_row_cb, &in, err,
			    sizeof(err));
	store_close_reader(st);
	struct report *r = NULL;
	FILE *out = NULL;
	if (rc < 0 || in.failed) {
		rc = ctl_fail("report waves", "%s", in.failed ? "out of memory" : err);
		goto out;
	}
	if (report_build(in.hosts, in.n, wave, util_now_ms(), &r, err, sizeof(err)) < 0) {
		rc = ctl_fail("report waves", "%s", err);
		goto out;
	}
	out = output ? fopen(output, "w") : stdout;
	if (!out) {
		rc = ctl_fail("report waves", "cannot write %s: %s", output, uv_strerror(UV_EIO));
		goto out;
	}
	if (report_write(r, (enum report_format)format, out) < 0 || fflush(out) != 0) {
		rc = ctl_fail("report waves", "writing %s failed", output ? output : "the report");
		goto out;
	}
	if (output)
		fprintf(stderr, "wave report written to %s\n", output);
	rc = CTL_OK;
out:
	if (out && out != stdout)
		fclose(out);
	report_free(r);
	for (size_t i = 0; i < in.n; i++)
		free((void *)in.hosts[i].evidence);
	free(in.hosts);
	json_decref(in.keep);
	return rc;
}

static void list_cb(const struct store_row *row, void *arg)
{
	const char *wave = ctl_value(row, "wave");
	printf("%-10s %-12s %-18s %s\n", wave ? wave : "(none)", ctl_value(row, "host_id"),
	       ctl_value(row, "status") ? ctl_value(row, "status") : "NEVER_SEEN",
	       ctl_value(row, "planned_date") ? ctl_value(row, "planned_date") : "-");
}

static int waves_list(const char *path)
{
	struct store *st;
	if (ctl_open_store("waves list", path, &st) != CTL_OK)
		return CTL_FAILED;
	printf("%-10s %-12s %-18s %s\n", "WAVE", "HOST", "STATUS", "PLANNED");
	char err[512];
	int rc = store_view(st, STORE_REPORT, NULL, NULL, NULL, list_cb, NULL, err, sizeof(err));
	store_close_reader(st);
	return rc < 0 ? ctl_fail("waves list", "%s", err) : CTL_OK;
}

int ctl_waves(int argc, char **argv)
{
	static const struct option opts[] = {{"store", required_argument, NULL, 'd'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *path = DEFAULT_STORE;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'd') {
			path = optarg;
		} else if (c == 'h') {
			fputs(waves_usage, stdout);
			return CTL_OK;
		} else {
			return ctl_usage_error("waves", "waves", "unknown option");
		}
	}
	if (optind < argc && strcmp(argv[optind], "import") == 0) {
		if (argc - optind != 2)
			return ctl_usage_error("waves import", "waves", "name one FILE.csv");
		return waves_import(argv[optind + 1], path);
	}
	if (optind < argc && strcmp(argv[optind], "list") == 0 && argc - optind == 1)
		return waves_list(path);
	return ctl_usage_error("waves", "waves", "the subcommand is import FILE.csv or list");
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
