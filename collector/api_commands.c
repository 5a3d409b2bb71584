/* The API's commands: the list, one with its per-step results, and
 * submission by operators. The API checks an envelope's shape (it decodes,
 * it is for the host named, its id is sound, it has not expired) and hands
 * it to the collector; the agent still verifies the signature, so the API
 * cannot make a command an operator did not sign. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "api_internal.h"
#include "exfleet.pb-c.h"
#include "log.h"
#include "pki.h"
#include "sign.h"
#include "util.h"

static const char *const states[] = {"queued",    "delivered", "succeeded",
				     "failed",    "rejected",  "expired"};

static json_t *or_null(json_t *v)
{
	return v ? v : json_null();
}

void api_command_json(json_t *c)
{
	static const char *const columns[] = {"result_status",      "result_reason",
					      "result_started_at",  "result_finished_at",
					      "result_received_at", "result_steps"};
	json_t *status = json_object_get(c, "result_status");
	json_t *result = json_null();
	if (status && !json_is_null(status)) {
		json_t *steps = json_object_get(c, "result_steps");
		result = json_pack("{s:O, s:O, s:O, s:O, s:O, s:O}", "status", status, "reason",
				   or_null(json_object_get(c, "result_reason")), "started_at",
				   or_null(json_object_get(c, "result_started_at")), "finished_at",
				   or_null(json_object_get(c, "result_finished_at")), "received_at",
				   or_null(json_object_get(c, "result_received_at")), "steps",
				   json_is_array(steps) ? steps : json_array());
		api_enum_name(result, "status", &exfleet__command_status__descriptor);
	}
	for (size_t i = 0; i < sizeof(columns) / sizeof(columns[0]); i++)
		json_object_del(c, columns[i]);
	json_object_set_new(c, "result", result ? result : json_null());
}

int api_get_commands(struct api_request *r)
{
	static const char *const allowed[] = {"host", "state", "limit", "offset", NULL};
	struct store_command_filter f = {0};
	struct store_page p;
	if (api_params_only(r, allowed) < 0)
		return 0;
	f.host_id = api_param(r, "host");
	if (f.host_id && !pki_name_valid(f.host_id))
		return api_error(r, 400, "invalid_parameter",
				 "host: '%.64s' is not a host id (letters, digits, '.', '_', '-'; "
				 "1 to 64)",
				 f.host_id);
	const char *state = api_param(r, "state");
	if (state) {
		for (size_t i = 0; i < sizeof(states) / sizeof(states[0]) && !f.state; i++)
			if (strcmp(state, states[i]) == 0)
				f.state = states[i];
		if (!f.state)
			return api_error(r, 400, "invalid_parameter",
					 "state: '%.64s' is not a command state; use queued, "
					 "delivered, succeeded, failed, rejected or expired",
					 state);
	}
	if (api_page(r, &p) < 0)
		return 0;
	struct store_query *q = api_store(r->api);
	char err[512];
	json_t *items = NULL;
	int64_t total = 0;
	int rc = store_query_begin(q, err, sizeof(err));
	if (rc == 0)
		rc = store_query_commands(q, &f, &p, &items, &total, err, sizeof(err));
	store_query_end(q);
	if (rc < 0)
		return api_store_error(r, rc, err);
	size_t i;
	json_t *command;
	json_array_foreach(items, i, command)
		api_command_json(command);
	return api_send_page(r, items, total, &p);
}

int api_get_command(struct api_request *r)
{
	static const char *const none[] = {NULL};
	if (api_params_only(r, none) < 0)
		return 0;
	if (!sign_command_id_valid(r->id))
		return api_error(r, 404, "not_found", "no command '%.64s'", r->id);
	struct store_query *q = api_store(r->api);
	char err[512];
	json_t *command = NULL;
	int rc = store_query_begin(q, err, sizeof(err));
	if (rc == 0)
		rc = store_query_command(q, r->id, &command, err, sizeof(err));
	store_query_end(q);
	if (rc < 0)
		return api_store_error(r, rc, err);
	if (!command)
		return api_error(r, 404, "not_found", "no command '%s'", r->id);
	api_command_json(command);
	return api_send_json(r, 200, command);
}

/* Standard base64 (padded, no line breaks) into a new buffer: 0 or -1. */
static int base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len)
{
	*out = NULL;
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
	if (len == 0 || len > INT32_MAX || len % 4 != 0 || strspn(text, alphabet) < len)
		return -1;
	uint8_t *buf = malloc(len);
	EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
	int n = 0, last = 0, rc = -1;
	if (!buf || !ctx)
		goto out;
	EVP_DecodeInit(ctx);
	if (EVP_DecodeUpdate(ctx, buf, &n, (const unsigned char *)text, (int)len) < 0 ||
	    EVP_DecodeFinal(ctx, buf + n, &last) < 0)
		goto out;
	*out = buf;
	*out_len = (size_t)(n + last);
	buf = NULL;
	rc = 0;
out:
	EVP_ENCODE_CTX_free(ctx);
	free(buf);
	return rc;
}

/* The string field key of body: 0, or -1 once it has answered 400. */
static int string_field(struct api_request *r, json_t *body, const char *key, const char **value,
			size_t *len)
{
	json_t *v = json_object_get(body, key);
	if (!v)
		return api_refuse(r, 400, "missing_field", "%s: required", key);
	if (!json_is_string(v))
		return api_refuse(r, 400, "invalid_field", "%s: must be a string", key);
	*value = json_string_value(v);
	*len = json_string_length(v);
	if (strlen(*value) != *len)
		return api_refuse(r, 400, "invalid_field", "%s: contains a NUL character", key);
	return 0;
}

/* A submitted envelope, decoded and checked by check_envelope. */
struct checked {
	Exfleet__Command *command;
	Exfleet__CommandBody *body;
	uint8_t *envelope;
	size_t len;
	char action[64];
};

static void checked_free(struct checked *c)
{
	if (c->body)
		exfleet__command_body__free_unpacked(c->body, NULL);
	if (c->command)
		exfleet__command__free_unpacked(c->command, NULL);
	free(c->envelope);
}

/* 0, or -1 once it has answered 400 naming what is wrong. */
static int check_envelope(struct api_request *r, const char *host_id, const char *text,
			  size_t len, struct checked *c)
{
	if (base64_decode(text, len, &c->envelope, &c->len) < 0 || c->len == 0)
		return api_refuse(r, 400, "invalid_envelope",
				  "envelope: not standard base64 (A-Z a-z 0-9 + / and = padding)");
	c->command = exfleet__command__unpack(NULL, c->len, c->envelope);
	if (!c->command)
		return api_refuse(r, 400, "invalid_envelope",
				  "envelope: does not decode as an exfleet Command");
	if (c->command->body.len == 0)
		return api_refuse(r, 400, "invalid_envelope",
				  "envelope: the Command has no body");
	c->body = exfleet__command_body__unpack(NULL, c->command->body.len,
						c->command->body.data);
	if (!c->body)
		return api_refuse(r, 400, "invalid_envelope",
				  "envelope: the Command's body does not decode as a CommandBody");
	if (!sign_command_id_valid(c->body->id))
		return api_refuse(r, 400, "invalid_envelope",
				  "envelope: command id '%.80s' is not 1 to 64 lower-case "
				  "hexadecimal digits",
				  c->body->id);
	if (strcmp(c->body->target_host_id, host_id) != 0)
		return api_refuse(r, 400, "invalid_field",
				  "host_id: '%s' but the envelope's command is for '%.64s'",
				  host_id, c->body->target_host_id);
	const ProtobufCFieldDescriptor *action =
		c->body->action_case ? protobuf_c_message_descriptor_get_field(
					       &exfleet__command_body__descriptor,
					       (unsigned)c->body->action_case)
				     : NULL;
	if (!action)
		return api_refuse(r, 400, "invalid_envelope",
				  "envelope: the command has no action");
	size_t i;
	for (i = 0; action->name[i] && i + 1 < sizeof(c->action); i++)
		c->action[i] = (char)(action->name[i] >= 'a' && action->name[i] <= 'z'
					      ? action->name[i] - 'a' + 'A'
					      : action->name[i]);
	c->action[i] = '\0';
	if (c->body->expires_at_ms <= util_now_ms()) {
		char when[32];
		util_format_time(c->body->expires_at_ms, when, sizeof(when));
		return api_refuse(r, 400, "invalid_envelope",
				  "envelope: the command expired at %s; sign a new one",
				  c->body->expires_at_ms > 0 ? when : "0 (it has no expiry)");
	}
	return 0;
}

/* Content-Type, if given, must be JSON. */
static int json_content(const char *type)
{
	return !type || strncmp(type, "application/json", 16) == 0;
}

int api_post_commands(struct api_request *r)
{
	static const char *const none[] = {NULL};
	const struct api_config *cfg = api_cfg(r->api);
	if (api_params_only(r, none) < 0)
		return 0;
	if (!json_content(r->content_type))
		return api_error(r, 415, "unsupported_media_type",
				 "Content-Type: '%.64s'; send application/json", r->content_type);
	if (r->body_len == 0)
		return api_error(r, 400, "invalid_field",
				 "body: empty; send {\"host_id\": ..., \"envelope\": ...}");
	json_error_t jerr;
	json_t *body =
		json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	struct checked c = {0};
	const char *host_id = NULL, *envelope = NULL;
	size_t host_len = 0, envelope_len = 0;
	const char *key;
	json_t *value;
	if (!body) {
		api_error(r, 400, "malformed_json", "body: not JSON: %s (line %d, column %d)",
			  jerr.text, jerr.line, jerr.column);
		goto out;
	}
	if (!json_is_object(body)) {
		api_error(r, 400, "invalid_field",
			  "body: must be an object {\"host_id\": ..., \"envelope\": ...}");
		goto out;
	}
	json_object_foreach(body, key, value) {
		if (strcmp(key, "host_id") != 0 && strcmp(key, "envelope") != 0) {
			api_error(r, 400, "unknown_field",
				  "%.64s: unknown field; the fields are host_id and envelope", key);
			goto out;
		}
	}
	if (string_field(r, body, "host_id", &host_id, &host_len) < 0 ||
	    string_field(r, body, "envelope", &envelope, &envelope_len) < 0)
		goto out;
	if (!pki_name_valid(host_id)) {
		api_error(r, 400, "invalid_field",
			  "host_id: '%.64s' is not a host id (letters, digits, '.', '_', '-'; 1 to "
			  "64)",
			  host_id);
		goto out;
	}
	if (check_envelope(r, host_id, envelope, envelope_len, &c) < 0)
		goto out;

	struct store_query *q = api_store(r->api);
	char err[512];
	json_t *existing = NULL;
	int known = 0;
	int rc = store_query_begin(q, err, sizeof(err));
	if (rc == 0)
		rc = store_query_host_known(q, host_id, &known, err, sizeof(err));
	if (rc == 0)
		rc = store_query_command(q, c.body->id, &existing, err, sizeof(err));
	store_query_end(q);
	if (rc < 0) {
		api_store_error(r, rc, err);
		goto out;
	}
	if (existing) {
		json_decref(existing);
		api_error(r, 409, "command_exists",
			  "envelope: command id %s is already used; every command needs a new id",
			  c.body->id);
		goto out;
	}
	if (!known) {
		api_error(r, 404, "not_found",
			  "host_id: no host '%s' has connected or is in a wave plan", host_id);
		goto out;
	}
	if (!cfg->submit_command) {
		api_error(r, 503, "unavailable", "this collector does not accept commands");
		goto out;
	}
	struct api_command cmd = {
		.host_id = host_id,
		.command_id = c.body->id,
		.action = c.action,
		.issued_at_ms = c.body->issued_at_ms,
		.expires_at_ms = c.body->expires_at_ms,
		.submitted_by = r->who->name,
		.envelope = c.envelope,
		.len = c.len,
	};
	rc = cfg->submit_command(&cmd, err, sizeof(err), cfg->arg);
	if (rc == UV_EEXIST) {
		api_error(r, 409, "command_exists",
			  "envelope: command id %s is already used; every command needs a new id",
			  c.body->id);
		goto out;
	}
	if (rc == UV_EACCES || rc == UV_ETIMEDOUT || rc == UV_EINVAL) {
		/* The collector's own check of the signature failed: the
		 * agent would refuse it too, so it is not relayed. */
		api_error(r, rc == UV_EACCES ? 403 : 400, "command_refused", "envelope: %s", err);
		goto out;
	}
	if (rc < 0) {
		log_err("api: command %s for %s from %s not stored: %s", c.body->id, host_id,
			r->who->name, err);
		api_error(r, 503, "submit_failed", "the command was not stored: %s", err);
		goto out;
	}
	log_info("api: %s submitted command %s (%s) for %s", r->who->name, c.body->id, c.action,
		 host_id);
	char location[128];
	snprintf(location, sizeof(location), "/api/v1/commands/%s", c.body->id);
	api_add_header(r, "location", location);
	api_send_json(r, 201,
		      json_pack("{s:s, s:s, s:s, s:s}", "command_id", c.body->id, "host_id",
				host_id, "action", c.action, "state", "queued"));
out:
	checked_free(&c);
	json_decref(body);
	return 0;
}
