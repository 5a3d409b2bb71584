/* exfleetctl commands, command and queue: the commands sent to hosts
 * (GET /api/v1/commands, /api/v1/commands/{id}), and signing one with the
 * operator's key and submitting it (POST /api/v1/commands), which repair
 * shares. The collector relays a command; only the operator's signature
 * makes an agent run it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "ctl.h"
#include "exfleet.pb-c.h"
#include "sign.h"
#include "util.h"


static const char commands_usage[] =
	"usage: exfleetctl commands [--host ID] [--state STATE] [--limit N]\n"
	"                           [--json | --csv] [connection]\n"
	"\n"
	"Commands sent to hosts, newest first: id, host, action, who signed it,\n"
	"its state (queued, delivered, succeeded, failed, rejected, expired) and the\n"
	"agent's reason. --limit N shows the newest N (default 100; 0 shows all).\n"
	CTL_CONN_USAGE;

static const char command_usage[] =
	"usage: exfleetctl command COMMAND_ID [--json] [connection]\n"
	"\n"
	"One command: its host, action, signer, validity, state, and the agent's\n"
	"result step by step with the Win32 error of each.\n"
	CTL_CONN_USAGE;

static const char queue_usage[] =
	"usage: exfleetctl queue HOST_ID rescan [--expires DURATION] [signer] [connection]\n"
	"       exfleetctl queue HOST_ID restart SERVICE... [--expires DURATION] [signer]\n"
	"                        [connection]\n"
	"  signer: --operator-cert FILE --operator-key FILE (default: --cert and --key)\n"
	"\n"
	"Signs a command with the operator's key and submits it for the collector to\n"
	"relay to HOST_ID: at once when the host is online, else when it connects,\n"
	"unless it expires first (default 1h; at most 24h; e.g. 30m, 2h). The agent\n"
	"runs it only if the signing certificate is an operator's (not a viewer's)\n"
	"from the deployment CA and not revoked; the collector checks the same and\n"
	"refuses it otherwise (exit status 1). Submitting needs an operator\n"
	"certificate too. Prints the command id (--json: the API's answer).\n"
	CTL_CONN_USAGE;

static const char *const states[] = {"queued",    "delivered", "succeeded",
				     "failed",    "rejected",  "expired"};

/* ---- signing and submitting ---- */

int ctl_command_id(char id[33])
{
	uint8_t raw[16];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -1;
	util_hex(raw, sizeof(raw), id);
	return 0;
}

int ctl_post_command(struct ctl_api *api, const char *host_id, const Exfleet__Command *cmd,
		     json_t **answer)
{
	size_t len = exfleet__command__get_packed_size(cmd);
	uint8_t *packed = malloc(len ? len : 1);
	char *text = malloc(4 * ((len + 2) / 3) + 1);
	json_t *request = NULL;
	*answer = NULL;
	if (packed && text) {
		exfleet__command__pack(cmd, packed);
		EVP_EncodeBlock((unsigned char *)text, packed, (int)len);
		request = json_pack("{s:s, s:s}", "host_id", host_id, "envelope", text);
	}
	int rc = request ? ctl_api_post_json(api, "/api/v1/commands", request, answer)
			 : ctl_api_report(api, CTL_FAILED, "out of memory");
	json_decref(request);
	free(packed);
	free(text);
	return rc;
}

int ctl_submit_command(struct ctl_api *api, const Exfleet__CommandBody *body, X509 *cert,
		       EVP_PKEY *key, json_t **answer)
{
	Exfleet__Command cmd = EXFLEET__COMMAND__INIT;
	char err[512];
	*answer = NULL;
	if (sign_command(body, key, cert, &cmd, err, sizeof(err)) < 0)
		return ctl_api_report(api, CTL_FAILED, "cannot sign: %s", err);
	int rc = ctl_post_command(api, body->target_host_id, &cmd, answer);
	sign_command_free(&cmd);
	return rc;
}

/* ---- commands ---- */

static void commands_table(json_t *items)
{
	char when[32];
	size_t i;
	json_t *c;
	printf("%-32s %-12s %-24s %-10s %-20s %-10s %s\n", "ID", "HOST", "ACTION", "STATE",
	       "SINCE", "SIGNER", "REASON");
	json_array_foreach(items, i, c) {
		printf("%-32s %-12s %-24s %-10s %-20s %-10s %s\n", ctl_str(c, "command_id", "?"),
		       ctl_str(c, "host_id", "?"), ctl_str(c, "action", "?"),
		       ctl_str(c, "state", "?"), ctl_time(c, "state_since", when, sizeof(when)),
		       ctl_str(c, "issuer", "?"),
		       ctl_str(json_object_get(c, "result"), "reason", ""));
	}
}

static void commands_csv(json_t *items)
{
	static const char *const columns[] = {"command_id", "host_id",    "action",
					      "issuer",     "issued_at",  "expires_at",
					      "state",      "state_since"};
	size_t n = sizeof(columns) / sizeof(columns[0]), i;
	json_t *c;
	for (size_t k = 0; k < n; k++)
		ctl_csv(stdout, columns[k], 0);
	ctl_csv(stdout, "result_status", 0);
	ctl_csv(stdout, "result_reason", 1);
	json_array_foreach(items, i, c) {
		char when[32];
		for (size_t k = 0; k < n; k++) {
			json_t *v = json_object_get(c, columns[k]);
			ctl_csv(stdout,
				json_is_integer(v) ? ctl_time(c, columns[k], when, sizeof(when))
						   : json_string_value(v),
				0);
		}
		json_t *result = json_object_get(c, "result");
		ctl_csv(stdout, ctl_str(result, "status", ""), 0);
		ctl_csv(stdout, ctl_str(result, "reason", ""), 1);
	}
}

int ctl_commands(int argc, char **argv)
{
	static const struct option opts[] = {{"host", required_argument, NULL, 'H'},
					     {"state", required_argument, NULL, 's'},
					     {"limit", required_argument, NULL, 'l'},
					     CTL_JSON_OPTION,
					     CTL_CSV_OPTION,
					     CTL_CONN_OPTIONS,
					     {NULL, 0, NULL, 0}};
	struct ctl_api api = {.what = "commands"};
	const char *host = NULL, *state = NULL;
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
			state = NULL;
			for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
				if (strcmp(optarg, states[i]) == 0)
					state = states[i];
			if (!state)
				return ctl_usage_error("commands", "commands",
						       "--state '%s' is not queued, delivered, "
						       "succeeded, failed, rejected or expired",
						       optarg);
			break;
		case 'l':
			if (ctl_api_limit(&api, optarg, &limit) != CTL_OK)
				return CTL_USAGE;
			break;
		case 'h':
			fputs(commands_usage, stdout);
			return CTL_OK;
		default:
			if (ctl_api_option(&api, c, argv) != CTL_OK)
				return CTL_USAGE;
		}
	}
	if (optind < argc)
		return ctl_usage_error("commands", "commands", "unexpected argument '%s'",
				       argv[optind]);
	json_t *items = NULL;
	int rc = ctl_api_connect(&api);
	if (rc == CTL_OK) {
		struct ctl_path path;
		ctl_path_init(&path, "/api/v1/commands", NULL);
		ctl_path_param(&path, "host", host);
		ctl_path_param(&path, "state", state);
		rc = ctl_api_get_items(&api, path.text, (size_t)limit, &items);
	}
	if (rc == CTL_OK)
		ctl_api_print_list(&api, items, commands_csv, commands_table,
				   host || state ? "(no commands match)" : "(no commands yet)");
	json_decref(items);
	ctl_api_close(&api);
	return rc;
}

/* ---- command ---- */

static void print_command(json_t *c)
{
	char a[32], b[32];
	printf("command   %s\n", ctl_str(c, "command_id", "?"));
	printf("host      %s\n", ctl_str(c, "host_id", "?"));
	printf("action    %s\n", ctl_str(c, "action", "?"));
	printf("signer    %s, issued %s, expires %s\n", ctl_str(c, "issuer", "?"),
	       ctl_time(c, "issued_at", a, sizeof(a)), ctl_time(c, "expires_at", b, sizeof(b)));
	printf("state     %s since %s\n", ctl_str(c, "state", "?"),
	       ctl_time(c, "state_since", a, sizeof(a)));
	json_t *result = json_object_get(c, "result");
	if (!json_is_object(result)) {
		printf("result    none yet\n");
		return;
	}
	const char *reason = ctl_str(result, "reason", "");
	printf("result    %s%s%s (finished %s)\n", ctl_str(result, "status", "?"),
	       reason[0] ? ": " : "", reason, ctl_time(result, "finished_at", a, sizeof(a)));
	size_t i;
	json_t *step;
	json_array_foreach(json_object_get(result, "steps"), i, step) {
		json_int_t win32 = json_integer_value(json_object_get(step, "win32_error"));
		printf("  %-24s %-22s %-6s", ctl_str(step, "step", "?"),
		       ctl_str(step, "target", ""),
		       json_is_true(json_object_get(step, "ok")) ? "ok" : "FAILED");
		if (win32)
			printf(" error %lld", (long long)win32);
		printf(" %s\n", ctl_str(step, "message", ""));
	}
}

int ctl_command(int argc, char **argv)
{
	static const struct option opts[] = {CTL_JSON_OPTION, CTL_CONN_OPTIONS, {NULL, 0, NULL, 0}};
	struct ctl_api api = {.what = "command"};
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(command_usage, stdout);
			return CTL_OK;
		}
		if (ctl_api_option(&api, c, argv) != CTL_OK)
			return CTL_USAGE;
	}
	if (optind + 1 != argc)
		return ctl_usage_error("command", "command", "name one COMMAND_ID");
	json_t *command = NULL;
	int rc = ctl_api_connect(&api);
	if (rc == CTL_OK) {
		struct ctl_path path;
		ctl_path_init(&path, "/api/v1/commands", argv[optind]);
		rc = ctl_api_get(&api, path.text, &command);
	}
	if (rc == CTL_OK) {
		if (api.json)
			ctl_print_json(command);
		else
			print_command(command);
	}
	json_decref(command);
	ctl_api_close(&api);
	return rc;
}

/* ---- queue ---- */

int ctl_queue(int argc, char **argv)
{
	static const struct option opts[] = {{"expires", required_argument, NULL, 'e'},
					     {"operator-cert", required_argument, NULL, 'c'},
					     {"operator-key", required_argument, NULL, 'k'},
					     CTL_JSON_OPTION,
					     CTL_CONN_OPTIONS,
					     {NULL, 0, NULL, 0}};
	struct ctl_api api = {.what = "queue"};
	const char *cert_file = NULL, *key_file = NULL;
	int64_t expires = 3600000;
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'e':
			if (ctl_parse_duration(optarg, &expires) < 0 || expires > 86400000)
				return ctl_usage_error("queue", "queue",
						       "--expires '%s' is not a duration like 30m "
						       "(at most 24h)",
						       optarg);
			break;
		case 'c':
			cert_file = optarg;
			break;
		case 'k':
			key_file = optarg;
			break;
		case 'h':
			fputs(queue_usage, stdout);
			return CTL_OK;
		default:
			if (ctl_api_option(&api, c, argv) != CTL_OK)
				return CTL_USAGE;
		}
	}
	if (argc - optind < 2)
		return ctl_usage_error("queue", "queue", "name HOST_ID and an action");
	if (!cert_file != !key_file)
		return ctl_usage_error("queue", "queue",
				       "give both --operator-cert and --operator-key, or neither");
	const char *host = argv[optind];
	const char *action = argv[optind + 1];
	char **services = argv + optind + 2;
	size_t nservices = (size_t)(argc - optind - 2);

	Exfleet__CommandBody body = EXFLEET__COMMAND_BODY__INIT;
	Exfleet__Rescan rescan = EXFLEET__RESCAN__INIT;
	Exfleet__RestartServices restart = EXFLEET__RESTART_SERVICES__INIT;
	if (strcmp(action, "rescan") == 0 && nservices == 0) {
		body.action_case = EXFLEET__COMMAND_BODY__ACTION_RESCAN;
		body.rescan = &rescan;
	} else if (strcmp(action, "restart") == 0 && nservices > 0) {
		restart.services = services;
		restart.n_services = nservices;
		body.action_case = EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES;
		body.restart_services = &restart;
	} else {
		return ctl_usage_error("queue", "queue",
				       "the action is 'rescan', or 'restart' and the services");
	}
	char id[33];
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	json_t *answer = NULL;
	int rc = ctl_api_connect(&api);
	if (rc != CTL_OK)
		goto out;
	if (ctl_command_id(id) < 0) {
		rc = ctl_fail("queue", "no randomness for a command id");
		goto out;
	}
	/* The signer is the operator whose certificate connects, unless named. */
	rc = ctl_load_operator("queue", cert_file ? cert_file : api.cert_used,
			       key_file ? key_file : api.key_used, &cert, &key);
	if (rc != CTL_OK)
		goto out;
	int64_t now = util_now_ms();
	body.id = id;
	body.target_host_id = (char *)host;
	body.issued_at_ms = now;
	body.expires_at_ms = now + expires;
	rc = ctl_submit_command(&api, &body, cert, key, &answer);
	if (rc == CTL_OK) {
		if (api.json)
			ctl_print_json(answer);
		else
			printf("%s\n", id);
	}
out:
	json_decref(answer);
	X509_free(cert);
	EVP_PKEY_free(key);
	ctl_api_close(&api);
	return rc;
}
