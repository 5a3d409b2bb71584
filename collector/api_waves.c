/* The API's wave plan and wave report, and the audit log's check: the
 * operations that used to read the store file directly from exfleetctl. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "api_internal.h"
#include "pki.h"
#include "report.h"
#include "store.h"
#include "util.h"
#include "waves.h"

/* POST /api/v1/waves?name=FILE with the plan's CSV as the body: replaces
 * the plan, all or nothing. A bad plan is refused with every bad line. */
int api_post_waves(struct api_request *r)
{
	static const char *const allowed[] = {"name", NULL};
	if (api_params_only(r, allowed) < 0)
		return 0;
	const char *name = api_param(r, "name");
	if (!name)
		name = "plan.csv";
	if (!*name || strlen(name) > 200 || strpbrk(name, "\r\n\"\\"))
		return api_error(r, 400, "invalid_parameter",
				 "name: give the plan's file name (1 to 200 characters, no "
				 "quotes or line breaks)");
	if (r->content_type && strncmp(r->content_type, "text/csv", 8) != 0 &&
	    strncmp(r->content_type, "text/plain", 10) != 0)
		return api_error(r, 415, "unsupported_media_type",
				 "Content-Type: send the plan as text/csv");
	const struct api_config *cfg = api_cfg(r->api);
	if (!cfg->import_waves)
		return api_error(r, 503, "unavailable", "this collector does not import plans");

	struct wave_plan plan = {0};
	struct wave_errors errors = {0};
	int rc = waves_parse(name, r->body ? r->body : "", r->body_len, &plan, &errors);
	if (rc < 0) {
		json_t *lines = json_array();
		for (size_t i = 0; i < errors.count; i++)
			json_array_append_new(lines, json_string(errors.lines[i]));
		char message[160];
		snprintf(message, sizeof(message),
			 "%s: %zu error%s in the plan; nothing was imported", name,
			 errors.total ? errors.total : 1, errors.total == 1 ? "" : "s");
		json_t *body = json_pack("{s:{s:s, s:s, s:o}}", "error", "code", "invalid_plan",
					 "message", message, "lines", lines);
		wave_plan_free(&plan);
		wave_errors_free(&errors);
		log_warn("api: %s: plan %s refused: %s", r->who->name, name, message);
		return api_send_json(r, rc == UV_E2BIG ? 413 : 400, body);
	}
	struct store_wave *rows = calloc(plan.count ? plan.count : 1, sizeof(*rows));
	if (!rows) {
		wave_plan_free(&plan);
		wave_errors_free(&errors);
		return api_error(r, 503, "unavailable", "out of memory");
	}
	json_t *waves = json_object();
	for (size_t i = 0; i < plan.count; i++) {
		rows[i] = (struct store_wave){plan.entries[i].host_id, plan.entries[i].wave,
					      plan.entries[i].planned_date};
		json_object_set_new(waves, plan.entries[i].wave, json_true());
	}
	char err[512];
	rc = cfg->import_waves(rows, plan.count, r->who->name, err, sizeof(err), cfg->arg);
	if (rc < 0) {
		log_err("api: %s: plan %s not imported: %s", r->who->name, name, err);
		api_error(r, 503, "import_failed", "the plan was not imported (nothing changed): %s",
			  err);
	} else {
		log_info("api: %s imported plan %s: %zu hosts in %zu waves", r->who->name, name,
			 plan.count, json_object_size(waves));
		api_send_json(r, 200,
			      json_pack("{s:I, s:I}", "imported", (json_int_t)plan.count, "waves",
					(json_int_t)json_object_size(waves)));
	}
	json_decref(waves);
	free(rows);
	wave_plan_free(&plan);
	wave_errors_free(&errors);
	return 0;
}

/* Rows of store_query_report as report.h's hosts; the strings stay in
 * items. evidence arrays are malloc'd. */
static struct report_host *report_hosts(json_t *items, size_t *n)
{
	size_t count = json_array_size(items);
	struct report_host *hosts = calloc(count ? count : 1, sizeof(*hosts));
	if (!hosts)
		return NULL;
	for (size_t i = 0; i < count; i++) {
		json_t *row = json_array_get(items, i);
		struct report_host *h = &hosts[i];
		h->host_id = json_string_value(json_object_get(row, "host_id"));
		h->wave = json_string_value(json_object_get(row, "wave"));
		h->site = json_string_value(json_object_get(row, "site"));
		h->status = json_string_value(json_object_get(row, "status"));
		h->connectivity = json_string_value(json_object_get(row, "connectivity"));
		h->planned_date = json_string_value(json_object_get(row, "planned_date"));
		h->promoted_at_ms = json_integer_value(json_object_get(row, "promoted_at"));
		h->detected_at_ms = json_integer_value(json_object_get(row, "detected_at"));
		h->repaired_at_ms = json_integer_value(json_object_get(row, "repaired_at"));
		json_t *evidence = json_object_get(row, "evidence");
		size_t k = json_is_array(evidence) ? json_array_size(evidence) : 0;
		const char **lines = k ? calloc(k, sizeof(char *)) : NULL;
		for (size_t e = 0; lines && e < k; e++) {
			const char *line = json_string_value(json_array_get(evidence, e));
			lines[e] = line ? line : "";
		}
		h->evidence = lines;
		h->n_evidence = lines ? k : 0;
	}
	*n = count;
	return hosts;
}

/* GET /api/v1/waves/report?wave=W&format=json|csv|html|table */
int api_get_report(struct api_request *r)
{
	static const char *const allowed[] = {"wave", "format", NULL};
	static const char *const types[] = {
		[REPORT_TABLE] = "text/plain; charset=utf-8",
		[REPORT_CSV] = "text/csv; charset=utf-8",
		[REPORT_JSON] = "application/json",
		[REPORT_HTML] = "text/html; charset=utf-8",
	};
	if (api_params_only(r, allowed) < 0)
		return 0;
	const char *wave = api_param(r, "wave");
	const char *format_name = api_param(r, "format");
	int format = format_name ? report_format_parse(format_name) : REPORT_JSON;
	if (format < 0)
		return api_error(r, 400, "invalid_parameter",
				 "format: '%.32s' is not table, csv, json or html", format_name);
	if (wave && (!*wave || strlen(wave) > WAVES_WAVE_MAX))
		return api_error(r, 400, "invalid_parameter",
				 "wave: give a wave's name (1 to %d characters)", WAVES_WAVE_MAX);
	struct store_query *q = api_store(r->api);
	struct store_clock clock;
	api_clock(r->api, &clock);
	char err[512];
	json_t *items = NULL;
	int rc = store_query_begin(q, err, sizeof(err));
	if (rc == 0)
		rc = store_query_report(q, &clock, &items, err, sizeof(err));
	store_query_end(q);
	if (rc < 0)
		return api_store_error(r, rc, err);

	size_t n = 0;
	struct report_host *hosts = report_hosts(items, &n);
	struct report *report = NULL;
	char *text = NULL;
	size_t len = 0;
	FILE *out = NULL;
	if (!hosts) {
		api_error(r, 503, "unavailable", "out of memory");
		goto out;
	}
	if (report_build(hosts, n, wave, clock.now_ms, &report, err, sizeof(err)) < 0) {
		api_error(r, 503, "unavailable", "%s", err);
		goto out;
	}
	if (wave && report->n_waves == 0) {
		api_error(r, 404, "not_found",
			  "wave: no host is in wave '%s' (by the plan or its agent's label)", wave);
		goto out;
	}
	out = open_memstream(&text, &len);
	if (!out || report_write(report, (enum report_format)format, out) < 0 || fflush(out) != 0) {
		api_error(r, 503, "unavailable", "the report could not be written: out of memory");
		goto out;
	}
	fclose(out);
	out = NULL;
	if (format == REPORT_HTML)
		api_send_html(r, 200, text, len);
	else
		api_send_text(r, 200, types[format], text, len);
out:
	if (out)
		fclose(out);
	free(text);
	report_free(report);
	for (size_t i = 0; hosts && i < n; i++)
		free((void *)hosts[i].evidence);
	free(hosts);
	json_decref(items);
	return 0;
}

/* GET /api/v1/audit/verify: {"entries", "intact", "first_bad"} */
int api_get_audit_verify(struct api_request *r)
{
	static const char *const none[] = {NULL};
	if (api_params_only(r, none) < 0)
		return 0;
	struct store_query *q = api_store(r->api);
	char err[512];
	int64_t entries = 0, first_bad = 0;
	int rc = store_query_begin(q, err, sizeof(err));
	if (rc == 0)
		rc = store_query_audit_verify(q, &entries, &first_bad, err, sizeof(err));
	store_query_end(q);
	if (rc < 0)
		return api_store_error(r, rc, err);
	if (first_bad)
		log_warn("api: audit log broken at entry %lld (checked for %s)",
			 (long long)first_bad, r->who->name);
	return api_send_json(r, 200,
			     json_pack("{s:I, s:b, s:o}", "entries", (json_int_t)entries, "intact",
				       first_bad == 0, "first_bad",
				       first_bad ? json_integer(first_bad) : json_null()));
}
