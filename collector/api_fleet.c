/* The API's read-only views of the fleet: hosts, one host, events, waves,
 * the audit log. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api_internal.h"
#include "exfleet.pb-c.h"
#include "pki.h"
#include "status.h"
#include "util.h"

/* Newest entries of each list shown with one host; the rest is paged
 * through /events?host= and /commands?host=. */
#define HOST_RECENT 50

static const char *const paging[] = {"limit", "offset", NULL};
static const char *const none[] = {NULL};

static void name_event(json_t *event)
{
	api_enum_name(event, "type", &exfleet__event_type__descriptor);
}

static void name_service(json_t *service)
{
	api_enum_name(service, "state", &exfleet__service_state__descriptor);
	api_enum_name(service, "start_type", &exfleet__start_type__descriptor);
	api_enum_name(service, "account_status", &exfleet__account_status__descriptor);
	if (json_is_null(json_object_get(service, "rights")))
		json_object_set_new(service, "rights", json_array());
}

/* Evidence is always an array, empty when there is none. */
static void evidence_array(json_t *o)
{
	if (!json_is_array(json_object_get(o, "evidence")))
		json_object_set_new(o, "evidence", json_array());
}

static int status_param(struct api_request *r, const char **status)
{
	*status = api_param(r, "status");
	if (!*status)
		return 0;
	/* Hosts with no status yet: planned ones that never connected. */
	if (strcasecmp(*status, "NEVER_SEEN") == 0) {
		*status = "NEVER_SEEN";
		return 0;
	}
	int s = host_status_parse(*status);
	if (s < 0)
		return api_refuse(r, 400, "invalid_parameter",
				  "status: '%.64s' is not a status; use HEALTHY, REPAIRED, "
				  "DEGRADED, AT_RISK, AFFECTED, NEEDS_SP_REINSTALL, REPAIRING or "
				  "NEVER_SEEN",
				  *status);
	*status = host_status_name((enum host_status)s);
	return 0;
}

static int connectivity_param(struct api_request *r, const char **connectivity)
{
	*connectivity = api_param(r, "connectivity");
	if (!*connectivity)
		return 0;
	for (int c = CONN_ONLINE; c <= CONN_NEVER_SEEN; c++) {
		const char *name = connectivity_name((enum connectivity)c);
		if (strcasecmp(*connectivity, name) == 0) {
			*connectivity = name;
			return 0;
		}
	}
	return api_refuse(r, 400, "invalid_parameter",
			  "connectivity: '%.64s' is not ONLINE, OFFLINE or NEVER_SEEN",
			  *connectivity);
}

/* A filter naming a label: any text but the empty string. */
static int label_param(struct api_request *r, const char *name, const char **value)
{
	*value = api_param(r, name);
	if (*value && !**value)
		return api_refuse(r, 400, "invalid_parameter",
				  "%s: empty; name one or leave it out", name);
	return 0;
}

int api_get_hosts(struct api_request *r)
{
	static const char *const allowed[] = {"status", "connectivity", "wave", "site",
					      "limit", "offset", NULL};
	struct store_host_filter f = {0};
	struct store_page p;
	if (api_params_only(r, allowed) < 0 || status_param(r, &f.status) < 0 ||
	    connectivity_param(r, &f.connectivity) < 0 || label_param(r, "wave", &f.wave) < 0 ||
	    label_param(r, "site", &f.site) < 0 || api_page(r, &p) < 0)
		return 0;
	struct store_query *q = api_store(r->api);
	struct store_clock clock;
	api_clock(r->api, &clock);
	char err[512];
	json_t *items = NULL;
	int64_t total = 0;
	int rc = store_query_begin(q, err, sizeof(err));
	if (rc == 0)
		rc = store_query_hosts(q, &clock, &f, &p, &items, &total, err, sizeof(err));
	store_query_end(q);
	if (rc < 0)
		return api_store_error(r, rc, err);
	size_t i;
	json_t *host;
	json_array_foreach(items, i, host)
		evidence_array(host);
	return api_send_page(r, items, total, &p);
}

/* {"items": [...], "total": n} */
static json_t *section(json_t *items, int64_t total)
{
	return json_pack("{s:o, s:I}", "items", items, "total", (json_int_t)total);
}

int api_get_host(struct api_request *r)
{
	if (api_params_only(r, none) < 0)
		return 0;
	const char *id = r->id;
	if (!pki_name_valid(id))
		return api_error(r, 404, "not_found", "no host '%.64s'", id);
	struct store_query *q = api_store(r->api);
	struct store_clock clock;
	api_clock(r->api, &clock);
	struct store_page recent = {HOST_RECENT, 0};
	struct store_event_filter ef = {.host_id = id};
	struct store_command_filter cf = {.host_id = id};
	json_t *host = NULL, *services = NULL, *history = NULL, *events = NULL, *commands = NULL;
	int64_t nhistory = 0, nevents = 0, ncommands = 0;
	char err[512];
	int rc = store_query_begin(q, err, sizeof(err));
	if (rc == 0)
		rc = store_query_host(q, &clock, id, &host, err, sizeof(err));
	if (rc == 0 && host) {
		rc = store_query_host_services(q, id, &services, err, sizeof(err));
		if (rc == 0)
			rc = store_query_host_history(q, id, &recent, &history, &nhistory, err,
						      sizeof(err));
		if (rc == 0)
			rc = store_query_events(q, &ef, &recent, &events, &nevents, err,
						sizeof(err));
		if (rc == 0)
			rc = store_query_commands(q, &cf, &recent, &commands, &ncommands, err,
						  sizeof(err));
	}
	store_query_end(q);
	if (rc < 0 || !host) {
		json_decref(host);
		json_decref(services);
		json_decref(history);
		json_decref(events);
		json_decref(commands);
		if (rc < 0)
			return api_store_error(r, rc, err);
		return api_error(r, 404, "not_found", "no host '%s' has connected or is planned",
				 id);
	}
	/* A planned host that never connected has no snapshot: the same keys, null. */
	static const char *const snapshot_keys[] = {
		"first_seen", "agent_version", "platform", "role", "domain", "role_changed_at",
		"sam_present", "exchange_version", "exchange_sp", "sp_needs_reapply",
		"highest_seq", "spool_dropped", "repaired_at", NULL};
	for (const char *const *k = snapshot_keys; *k; k++)
		if (!json_object_get(host, *k))
			json_object_set_new(host, *k, json_null());
	evidence_array(host);
	api_enum_name(host, "role", &exfleet__domain_role__descriptor);
	api_bool(host, "sam_present");
	api_bool(host, "sp_needs_reapply");
	size_t i;
	json_t *item;
	json_array_foreach(services, i, item)
		name_service(item);
	json_array_foreach(history, i, item)
		evidence_array(item);
	json_array_foreach(events, i, item)
		name_event(item);
	json_array_foreach(commands, i, item)
		api_command_json(item);
	json_object_set_new(host, "services", services);
	json_object_set_new(host, "status_history", section(history, nhistory));
	json_object_set_new(host, "recent_events", section(events, nevents));
	json_object_set_new(host, "commands", section(commands, ncommands));
	return api_send_json(r, 200, host);
}

int api_get_events(struct api_request *r)
{
	static const char *const allowed[] = {"host", "source", "id", "since", "until",
					      "limit", "offset", NULL};
	struct store_event_filter f = {0};
	struct store_page p;
	if (api_params_only(r, allowed) < 0)
		return 0;
	f.host_id = api_param(r, "host");
	if (f.host_id && !pki_name_valid(f.host_id))
		return api_error(r, 400, "invalid_parameter",
				 "host: '%.64s' is not a host id (letters, digits, '.', '_', '-'; "
				 "1 to 64)",
				 f.host_id);
	if (label_param(r, "source", &f.source) < 0 ||
	    api_param_int(r, "id", 0, UINT32_MAX, &f.event_id, &f.has_event_id) < 0 ||
	    api_param_time(r, "since", &f.since_ms, &f.has_since) < 0 ||
	    api_param_time(r, "until", &f.until_ms, &f.has_until) < 0 || api_page(r, &p) < 0)
		return 0;
	if (f.has_since && f.has_until && f.until_ms <= f.since_ms)
		return api_error(r, 400, "invalid_parameter", "until: must be later than since");
	struct store_query *q = api_store(r->api);
	char err[512];
	json_t *items = NULL;
	int64_t total = 0;
	int rc = store_query_begin(q, err, sizeof(err));
	if (rc == 0)
		rc = store_query_events(q, &f, &p, &items, &total, err, sizeof(err));
	store_query_end(q);
	if (rc < 0)
		return api_store_error(r, rc, err);
	size_t i;
	json_t *event;
	json_array_foreach(items, i, event)
		name_event(event);
	return api_send_page(r, items, total, &p);
}

int api_get_waves(struct api_request *r)
{
	struct store_page p;
	if (api_params_only(r, paging) < 0 || api_page(r, &p) < 0)
		return 0;
	struct store_query *q = api_store(r->api);
	struct store_clock clock;
	api_clock(r->api, &clock);
	char err[512];
	json_t *items = NULL;
	int64_t total = 0;
	int rc = store_query_begin(q, err, sizeof(err));
	if (rc == 0)
		rc = store_query_waves(q, &clock, &p, &items, &total, err, sizeof(err));
	store_query_end(q);
	if (rc < 0)
		return api_store_error(r, rc, err);
	return api_send_page(r, items, total, &p);
}

int api_get_audit(struct api_request *r)
{
	struct store_page p;
	if (api_params_only(r, paging) < 0 || api_page(r, &p) < 0)
		return 0;
	struct store_query *q = api_store(r->api);
	char err[512];
	json_t *items = NULL;
	int64_t total = 0;
	int rc = store_query_begin(q, err, sizeof(err));
	if (rc == 0)
		rc = store_query_audit(q, &p, &items, &total, err, sizeof(err));
	store_query_end(q);
	if (rc < 0)
		return api_store_error(r, rc, err);
	return api_send_page(r, items, total, &p);
}

/* The fleet at a glance: {"hosts", "by_status" (every status, and
 * NEVER_SEEN for planned hosts that never connected), "by_connectivity",
 * "commands_by_state", "generated_at"}. */
int api_counts(const struct api *a, struct store_clock *clock, json_t **counts, char *err,
	       size_t errlen)
{
	struct store_query *q = api_store(a);
	api_clock(a, clock);
	*counts = NULL;
	int rc = store_query_begin(q, err, errlen);
	if (rc == 0)
		rc = store_query_counts(q, clock, counts, err, errlen);
	store_query_end(q);
	return rc;
}

int api_get_summary(struct api_request *r)
{
	if (api_params_only(r, none) < 0)
		return 0;
	struct store_clock clock;
	char err[512];
	json_t *counts;
	int rc = api_counts(r->api, &clock, &counts, err, sizeof(err));
	if (rc < 0)
		return api_store_error(r, rc, err);
	json_t *by_status = json_object(), *by_connectivity = json_object();
	json_int_t hosts = 0, seen = 0;
	for (int s = HOST_HEALTHY; s <= HOST_REPAIRING; s++) {
		const char *name = host_status_name((enum host_status)s);
		json_int_t n = json_integer_value(
			json_object_get(json_object_get(counts, "hosts_by_status"), name));
		json_object_set_new(by_status, name, json_integer(n));
		seen += n;
	}
	static const char *const reach[] = {"ONLINE", "OFFLINE", "NEVER_SEEN"};
	for (size_t i = 0; i < sizeof(reach) / sizeof(reach[0]); i++) {
		json_int_t n = json_integer_value(
			json_object_get(json_object_get(counts, "hosts_by_connectivity"), reach[i]));
		json_object_set_new(by_connectivity, reach[i], json_integer(n));
		hosts += n;
	}
	json_object_set_new(by_status, "NEVER_SEEN", json_integer(hosts - seen));
	char now[32];
	util_format_time(clock.now_ms, now, sizeof(now));
	json_t *body = json_pack("{s:I, s:o, s:o, s:O, s:s}", "hosts", hosts, "by_status",
				 by_status, "by_connectivity", by_connectivity, "commands_by_state",
				 json_object_get(counts, "commands_by_state"), "generated_at", now);
	json_decref(counts);
	return api_send_json(r, 200, body);
}

int api_get_sealing(struct api_request *r)
{
	if (api_params_only(r, none) < 0)
		return 0;
	if (!pki_name_valid(r->id))
		return api_error(r, 404, "not_found", "no host '%.64s'", r->id);
	struct store_query *q = api_store(r->api);
	char err[512];
	json_t *sealing = NULL;
	int rc = store_query_begin(q, err, sizeof(err));
	if (rc == 0)
		rc = store_query_host_sealing(q, r->id, &sealing, err, sizeof(err));
	store_query_end(q);
	if (rc < 0)
		return api_store_error(r, rc, err);
	if (!sealing)
		return api_error(r, 404, "not_found",
				 "host '%s' has not sent a sealing key (it never connected, or its "
				 "agent is older than the repair commands)",
				 r->id);
	json_object_set_new(sealing, "host_id", json_string(r->id));
	return api_send_json(r, 200, sealing);
}
