/* exfleetctl hosts, host and queue: the fleet as the collector's store has
 * it. They read the store file directly until the collector's API serves
 * operators; run them where the collector's database is. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "ctl.h"
#include "pki.h"
#include "sign.h"
#include "status.h"
#include "store.h"
#include "util.h"

#define DEFAULT_STORE "collector.db"
#define HEARTBEAT_MS 30000

static const char hosts_usage[] =
	"usage: exfleetctl hosts [--status STATUS] [--wave WAVE] [--json] [--store FILE]\n"
	"\n"
	"Every host the collector knows, with its status, connectivity and first\n"
	"piece of evidence. STATUS is one of HEALTHY, REPAIRED, DEGRADED, AT_RISK,\n"
	"AFFECTED, NEEDS_SP_REINSTALL, REPAIRING. --store is the collector's\n"
	"database (default ./" DEFAULT_STORE ").\n";

static const char host_usage[] =
	"usage: exfleetctl host HOST_ID [--json] [--store FILE]\n"
	"\n"
	"One host: its status with all the evidence, its services and their\n"
	"accounts and rights, the status history, recent events and commands.\n";

static const char queue_usage[] =
	"usage: exfleetctl queue HOST_ID rescan OPERATOR [--expires DURATION] [--store FILE]\n"
	"       exfleetctl queue HOST_ID restart SERVICE... OPERATOR [--expires DURATION]\n"
	"                    [--store FILE]\n"
	"  OPERATOR: --operator-cert FILE --operator-key FILE\n"
	"\n"
	"Signs a command with the operator's key and queues it for the collector to\n"
	"relay to HOST_ID: at once when the host is online, else when it connects,\n"
	"unless it expires first (default 1h; at most 24h; e.g. 30m, 2h). The agent\n"
	"runs it only if the certificate is an operator's (not a viewer's) from the\n"
	"deployment CA and not revoked. Prints the command id.\n";

static const char *when(int64_t ms, char *buf, size_t len)
{
	if (ms <= 0)
		return "-";
	util_format_time(ms, buf, len);
	return buf;
}

static const char *connectivity(const struct store_row *row)
{
	int64_t seen = ctl_value_int(row, "last_seen");
	return connectivity_name(connectivity_of(seen, 1, util_now_ms(), HEARTBEAT_MS));
}

/* The first line of a JSON array of evidence, or "". */
static void first_evidence(const char *evidence, char *out, size_t len)
{
	out[0] = '\0';
	json_t *a = evidence ? json_loads(evidence, 0, NULL) : NULL;
	const char *line = json_string_value(json_array_get(a, 0));
	if (line)
		snprintf(out, len, "%s", line);
	json_decref(a);
}

/* A row as a JSON object; evidence-like columns parsed. */
static json_t *row_json(const struct store_row *row)
{
	json_t *o = json_object();
	for (int i = 0; i < row->n; i++) {
		const char *v = row->values[i];
		const char *name = row->names[i];
		json_t *j = NULL;
		if (!v)
			j = json_null();
		else if (row->types[i] == STORE_INTEGER)
			j = json_integer(strtoll(v, NULL, 10));
		else if (strcmp(name, "evidence") == 0 || strcmp(name, "rights") == 0 ||
			 strcmp(name, "steps") == 0)
			j = json_loads(v, 0, NULL);
		if (!j)
			j = json_string(v);
		json_object_set_new(o, name, j);
	}
	return o;
}

struct listing {
	json_t *json; /* collecting for --json, else printing */
	int rows;
};

static void host_line_cb(const struct store_row *row, void *arg)
{
	struct listing *l = arg;
	l->rows++;
	if (l->json) {
		json_t *o = row_json(row);
		json_object_set_new(o, "connectivity", json_string(connectivity(row)));
		json_array_append_new(l->json, o);
		return;
	}
	char since[32], evidence[256];
	first_evidence(ctl_value(row, "evidence"), evidence, sizeof(evidence));
	const char *wave = ctl_value(row, "wave");
	const char *site = ctl_value(row, "site");
	printf("%-12s %-6s %-10s %-18s %-10s %-20s %s\n", ctl_value(row, "host_id"),
	       wave ? wave : "-", site ? site : "-", ctl_value(row, "status"), connectivity(row),
	       when(ctl_value_int(row, "status_since"), since, sizeof(since)), evidence);
}

int ctl_hosts(int argc, char **argv)
{
	static const struct option opts[] = {{"status", required_argument, NULL, 's'},
					     {"wave", required_argument, NULL, 'w'},
					     {"json", no_argument, NULL, 'j'},
					     {"store", required_argument, NULL, 'd'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *status = NULL, *wave = NULL, *path = DEFAULT_STORE;
	int json = 0, c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			status = optarg;
			break;
		case 'w':
			wave = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'd':
			path = optarg;
			break;
		case 'h':
			fputs(hosts_usage, stdout);
			return CTL_OK;
		default:
			return ctl_usage_error("hosts", "hosts", "unknown option");
		}
	}
	if (optind < argc)
		return ctl_usage_error("hosts", "hosts", "unexpected argument '%s'", argv[optind]);
	char canonical[32];
	if (status) {
		int s = host_status_parse(status);
		if (s < 0)
			return ctl_usage_error("hosts", "hosts", "'%s' is not a status", status);
		snprintf(canonical, sizeof(canonical), "%s", host_status_name((enum host_status)s));
		status = canonical;
	}
	struct store *st;
	if (ctl_open_store("hosts", path, &st) != CTL_OK)
		return CTL_FAILED;
	struct listing l = {json ? json_array() : NULL, 0};
	if (!json)
		printf("%-12s %-6s %-10s %-18s %-10s %-20s %s\n", "HOST", "WAVE", "SITE", "STATUS",
		       "CONNECTED", "SINCE", "EVIDENCE");
	char err[512];
	int rc = store_view(st, STORE_HOSTS, NULL, status, wave, host_line_cb, &l, err,
			    sizeof(err));
	store_close_reader(st);
	if (rc < 0) {
		json_decref(l.json);
		return ctl_fail("hosts", "%s", err);
	}
	if (json) {
		json_dumpf(l.json, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(l.json);
	} else if (l.rows == 0) {
		printf("(no hosts%s)\n", status || wave ? " match" : " yet");
	}
	return CTL_OK;
}

/* ---- host ---- */

struct detail {
	json_t *json;
	json_t *section;
	int rows;
};

static void collect_cb(const struct store_row *row, void *arg)
{
	struct detail *d = arg;
	d->rows++;
	json_array_append_new(d->section, row_json(row));
}

static const char *state_name(int n)
{
	static const char *const names[] = {"?", "stopped", "start pending", "stop pending",
					    "running", "continue pending", "pause pending",
					    "paused"};
	return n >= 0 && n < 8 ? names[n] : "?";
}

static int64_t num(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static void print_host(json_t *j)
{
	json_t *h = json_object_get(j, "host");
	char a[32], b[32];
	printf("host      %s\n", json_string_value(json_object_get(h, "host_id")));
	printf("status    %s since %s\n", json_string_value(json_object_get(h, "status")),
	       when(num(h, "status_since"), a, sizeof(a)));
	json_t *line;
	size_t i;
	json_array_foreach(json_object_get(h, "evidence"), i, line)
		printf("          - %s\n", json_string_value(line));
	printf("connected %s (last seen %s)\n",
	       json_string_value(json_object_get(j, "connectivity")),
	       when(num(h, "last_seen"), a, sizeof(a)));
	const char *wave = json_string_value(json_object_get(h, "wave"));
	const char *site = json_string_value(json_object_get(h, "site"));
	const char *domain = json_string_value(json_object_get(h, "domain"));
	printf("wave      %s, site %s\n", wave ? wave : "-", site ? site : "-");
	printf("role      %s of %s; promoted %s\n",
	       num(h, "role") >= 5 ? "domain controller" : "member/standalone server",
	       domain ? domain : "?",
	       when(num(h, "promoted_at"), b, sizeof(b)));
	const char *ver = json_string_value(json_object_get(h, "exchange_version"));
	printf("exchange  %s SP%lld\n", ver ? ver : "?", (long long)num(h, "exchange_sp"));

	printf("\nservices\n");
	json_t *svc;
	json_array_foreach(json_object_get(j, "services"), i, svc) {
		/* A builtin account holds every right: no need to list them. */
		char *rights = num(svc, "account_status") == 3
				       ? strdup("(builtin account: every right)")
				       : json_dumps(json_object_get(svc, "rights"), JSON_COMPACT);
		printf("  %-14s %-8s exit %-5lld %-22s rights: %s\n",
		       json_string_value(json_object_get(svc, "name")),
		       state_name((int)num(svc, "state")), (long long)num(svc, "win32_exit_code"),
		       json_string_value(json_object_get(svc, "logon_account")),
		       rights ? rights : "[]");
		free(rights);
	}
	printf("\nstatus history\n");
	json_t *hist;
	json_array_foreach(json_object_get(j, "history"), i, hist) {
		printf("  %s  %s\n", when(num(hist, "at"), a, sizeof(a)),
		       json_string_value(json_object_get(hist, "status")));
	}
	printf("\nrecent events\n");
	json_t *ev;
	json_array_foreach(json_object_get(j, "events"), i, ev) {
		printf("  %s  %-24s %5lld  %s\n", when(num(ev, "time_generated"), a, sizeof(a)),
		       json_string_value(json_object_get(ev, "source")),
		       (long long)num(ev, "event_id"),
		       json_string_value(json_object_get(ev, "message")));
	}
	printf("\ncommands\n");
	json_t *cmd;
	json_array_foreach(json_object_get(j, "commands"), i, cmd) {
		const char *reason = json_string_value(json_object_get(cmd, "reason"));
		printf("  %s  %-18s %-10s %s\n", json_string_value(json_object_get(cmd, "command_id")),
		       json_string_value(json_object_get(cmd, "action")),
		       json_string_value(json_object_get(cmd, "state")), reason ? reason : "");
	}
}

int ctl_host(int argc, char **argv)
{
	static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
					     {"store", required_argument, NULL, 'd'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *path = DEFAULT_STORE;
	int json = 0, c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'j')
			json = 1;
		else if (c == 'd')
			path = optarg;
		else if (c == 'h') {
			fputs(host_usage, stdout);
			return CTL_OK;
		} else
			return ctl_usage_error("host", "host", "unknown option");
	}
	if (optind + 1 != argc)
		return ctl_usage_error("host", "host", "name one HOST_ID");
	const char *id = argv[optind];
	struct store *st;
	if (ctl_open_store("host", path, &st) != CTL_OK)
		return CTL_FAILED;
	static const struct {
		enum store_view view;
		const char *name;
	} sections[] = {{STORE_HOST, "host"},
			{STORE_HOST_SERVICES, "services"},
			{STORE_HOST_HISTORY, "history"},
			{STORE_HOST_EVENTS, "events"},
			{STORE_HOST_COMMANDS, "commands"}};
	json_t *j = json_object();
	char err[512];
	int rc = CTL_OK;
	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
		struct detail d = {j, json_array(), 0};
		if (store_view(st, sections[i].view, id, NULL, NULL, collect_cb, &d, err,
			       sizeof(err)) < 0) {
			json_decref(d.section);
			rc = ctl_fail("host", "%s", err);
			goto out;
		}
		if (sections[i].view == STORE_HOST) {
			if (d.rows == 0) {
				json_decref(d.section);
				rc = ctl_fail("host", "no host '%s' in %s", id, path);
				goto out;
			}
			json_t *h = json_incref(json_array_get(d.section, 0));
			json_decref(d.section);
			json_object_set_new(
				j, "connectivity",
				json_string(connectivity_name(connectivity_of(
					num(h, "last_seen"), 1, util_now_ms(), HEARTBEAT_MS))));
			json_object_set_new(j, "host", h);
		} else {
			json_object_set_new(j, sections[i].name, d.section);
		}
	}
	if (json) {
		json_dumpf(j, stdout, JSON_INDENT(2));
		putchar('\n');
	} else {
		print_host(j);
	}
out:
	json_decref(j);
	store_close_reader(st);
	return rc;
}

/* ---- queue ---- */

static int parse_duration_ms(const char *s, int64_t *ms)
{
	char *end;
	long long n = strtoll(s, &end, 10);
	if (end == s || n <= 0)
		return -1;
	int64_t unit = strcmp(end, "s") == 0   ? 1000
		       : strcmp(end, "m") == 0 ? 60000
		       : strcmp(end, "h") == 0 ? 3600000
		       : strcmp(end, "d") == 0 ? 86400000
					       : 0;
	if (!unit || n > 365LL * 86400000 / unit)
		return -1;
	*ms = n * unit;
	return 0;
}

int ctl_queue(int argc, char **argv)
{
	static const struct option opts[] = {{"expires", required_argument, NULL, 'e'},
					     {"store", required_argument, NULL, 'd'},
					     {"operator-cert", required_argument, NULL, 'c'},
					     {"operator-key", required_argument, NULL, 'k'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *path = DEFAULT_STORE, *cert_file = NULL, *key_file = NULL;
	int64_t expires = 3600000;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'e') {
			if (parse_duration_ms(optarg, &expires) < 0)
				return ctl_usage_error("queue", "queue",
						       "--expires '%s' is not a duration like 30m",
						       optarg);
		} else if (c == 'd') {
			path = optarg;
		} else if (c == 'c') {
			cert_file = optarg;
		} else if (c == 'k') {
			key_file = optarg;
		} else if (c == 'h') {
			fputs(queue_usage, stdout);
			return CTL_OK;
		} else {
			return ctl_usage_error("queue", "queue", "unknown option");
		}
	}
	if (argc - optind < 2)
		return ctl_usage_error("queue", "queue", "name HOST_ID and an action");
	if (!cert_file || !key_file)
		return ctl_usage_error("queue", "queue",
				       "commands are signed: give --operator-cert and --operator-key");
	const char *host = argv[optind];
	const char *action = argv[optind + 1];
	char **services = argv + optind + 2;
	size_t nservices = (size_t)(argc - optind - 2);

	Exfleet__CommandBody body = EXFLEET__COMMAND_BODY__INIT;
	Exfleet__Rescan rescan = EXFLEET__RESCAN__INIT;
	Exfleet__RestartServices restart = EXFLEET__RESTART_SERVICES__INIT;
	const char *action_name;
	if (strcmp(action, "rescan") == 0 && nservices == 0) {
		body.action_case = EXFLEET__COMMAND_BODY__ACTION_RESCAN;
		body.rescan = &rescan;
		action_name = "RESCAN";
	} else if (strcmp(action, "restart") == 0 && nservices > 0) {
		restart.services = services;
		restart.n_services = nservices;
		body.action_case = EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES;
		body.restart_services = &restart;
		action_name = "RESTART_SERVICES";
	} else {
		return ctl_usage_error("queue", "queue",
				       "the action is 'rescan', or 'restart' and the services");
	}
	uint8_t raw[16];
	char id[33];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return ctl_fail("queue", "no randomness for a command id");
	util_hex(raw, sizeof(raw), id);
	int64_t now = util_now_ms();
	body.id = id;
	body.target_host_id = (char *)host;
	body.issued_at_ms = now;
	body.expires_at_ms = now + expires;

	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	Exfleet__Command cmd = EXFLEET__COMMAND__INIT;
	uint8_t *envelope = NULL;
	size_t elen = 0;
	int rc = CTL_FAILED;
	char err[512];
	if (ctl_load_operator("queue", cert_file, key_file, &cert, &key) != CTL_OK)
		goto out;
	if (sign_command(&body, key, cert, &cmd, err, sizeof(err)) < 0) {
		ctl_fail("queue", "%s", err);
		goto out;
	}
	elen = exfleet__command__get_packed_size(&cmd);
	envelope = malloc(elen);
	if (!envelope)
		goto out;
	exfleet__command__pack(&cmd, envelope);
	struct store *st;
	if (ctl_open_store("queue", path, &st) != CTL_OK)
		goto out;
	char signer[PKI_NAME_MAX + 1] = "?";
	enum pki_role role;
	pki_cert_identity(cert, signer, sizeof(signer), &role);
	if (store_enqueue_command(st, id, host, action_name, signer, now, now + expires, envelope,
				  elen, err, sizeof(err)) < 0)
		ctl_fail("queue", "%s", err);
	else
		rc = CTL_OK;
	store_close_reader(st);
	if (rc == CTL_OK)
		printf("%s\n", id);
out:
	sign_command_free(&cmd);
	free(envelope);
	X509_free(cert);
	EVP_PKEY_free(key);
	return rc;
}
