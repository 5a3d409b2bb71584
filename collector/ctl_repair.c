/* exfleetctl repair: the KB Q255269 repair, planned per host and run as a
 * sequence of operator-signed commands. For each host: verify the account's
 * password, grant the service account its rights, set the account and
 * password on each Exchange service, restart them in dependency order,
 * rescan. A failed step stops that host's plan. Passwords are sealed to each
 * agent's key (checked against its certificate first) and wiped here after
 * use; they never reach the collector in the clear.
 *
 * Everything goes through the collector's API: the hosts and their services
 * (GET /api/v1/hosts), each agent's sealing key (GET
 * /api/v1/hosts/{id}/sealing), the commands (POST /api/v1/commands) and
 * their outcomes (GET /api/v1/commands, newest first). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <uv.h>

#include "ctl.h"
#include "seal.h"
#include "sign.h"
#include "util.h"

#define PASSWORD_MAX 256
#define POLL_MS 200

static const char repair_usage[] =
	"usage: exfleetctl repair (--host ID | --status STATUS | --wave WAVE)\n"
	"                         --account DOMAIN\\NAME [--password-file FILE]\n"
	"                         [--canary N] [--max-failure-rate R] [--dry-run]\n"
	"                         [--expires DURATION] [--crl FILE] [--json]\n"
	"                         [signer] [connection]\n"
	"       exfleetctl repair --service-pack (--host ID | --status STATUS | --wave WAVE) ...\n"
	"  signer: --operator-cert FILE --operator-key FILE (default: --cert and --key)\n"
	"\n"
	"Repairs Exchange 5.5 after dcpromo (KB Q255269). Per host, each step a\n"
	"signed command that must succeed before the next: verify-credentials,\n"
	"grant-rights (SeServiceLogonRight, SeTcbPrivilege, SeRestorePrivilege),\n"
	"set-service-credentials on the host's Exchange services, restart-services\n"
	"(dependency order), rescan. --service-pack instead reapplies the service\n"
	"pack (the installer the agent's own configuration names), for hosts still\n"
	"NEEDS_SP_REINSTALL. The steps that go out together, one per host, are\n"
	"signed as one batch: one signature, and each agent checks its own command\n"
	"in full.\n"
	"\n"
	"The password is read from --password-file (first line) or asked for without\n"
	"echo; it is sealed to each agent's key, after that key's signature is\n"
	"checked against the agent's certificate, the CA (--ca) and --crl, and wiped\n"
	"after use. --dry-run prints each host's plan and sends nothing (a viewer\n"
	"certificate will do). --canary N repairs N hosts first and goes on only if\n"
	"at most --max-failure-rate (default 0) of them failed. Each command is\n"
	"valid for --expires (default 5m, at most 24h), and a host whose step has\n"
	"no result by then has failed. Progress is printed per host, then a\n"
	"summary (--json: the summary as JSON, progress on standard error). The\n"
	"exit status is 1 if any host's repair failed.\n"
	CTL_CONN_USAGE;

enum step {
	STEP_VERIFY,
	STEP_GRANT,
	STEP_SET,
	STEP_RESTART,
	STEP_SERVICE_PACK,
	STEP_RESCAN,
	STEP_DONE,
};

static const char *const step_names[] = {"verify-credentials", "grant-rights",
					 "set-service-credentials", "restart-services",
					 "reapply-service-pack", "rescan", "done"};

#define N_EXCHANGE 6
static const char *const exchange_services[N_EXCHANGE] = {
	"MSExchangeSA", "MSExchangeDS", "MSExchangeIS", "MSExchangeMTA", "MSExchangeIMC",
	"MSExchangeES"};
static const char *const rights[] = {"SeServiceLogonRight", "SeTcbPrivilege",
				     "SeRestorePrivilege"};

struct host_plan {
	char host_id[65];
	char *services[N_EXCHANGE]; /* the Exchange services this host has */
	size_t n_services;
	uint8_t pub[SEAL_KEY_LEN];
	int sealing_ok;
	enum step step;
	char command_id[33];    /* of the step in flight, "" when none */
	int seen;               /* its state was read this round */
	int failed;
	char failure[300];
};

struct repair {
	struct ctl_api *api;
	FILE *progress;         /* stdout, or stderr under --json */
	struct sign_verifier *verifier;
	X509 *cert;
	EVP_PKEY *key;
	const char *account;
	char password[PASSWORD_MAX];
	size_t password_len;
	int service_pack;
	int64_t expires_ms;
	struct host_plan *hosts;
	size_t n;
	int stopped;            /* the collector went away: CTL_UNREACHABLE */
};

static void host_failed(struct repair *r, struct host_plan *h, const char *fmt, ...)
	LOG_PRINTF(3, 4);

static void host_failed(struct repair *r, struct host_plan *h, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(h->failure, sizeof(h->failure), fmt, ap);
	va_end(ap);
	h->failed = 1;
	fprintf(r->progress, "  %-10s FAILED: %s\n", h->host_id, h->failure);
}

/* ---- choosing hosts ---- */

static int add_host(struct repair *r, const char *id)
{
	struct host_plan *grown = realloc(r->hosts, (r->n + 1) * sizeof(*grown));
	if (!grown)
		return ctl_fail("repair", "out of memory");
	r->hosts = grown;
	struct host_plan *h = &grown[r->n++];
	memset(h, 0, sizeof(*h));
	snprintf(h->host_id, sizeof(h->host_id), "%s", id);
	return CTL_OK;
}

/* The Exchange services a host reported, from GET /api/v1/hosts/{id}. */
static int load_services(struct repair *r, struct host_plan *h)
{
	struct ctl_path path;
	json_t *host;
	ctl_path_init(&path, "/api/v1/hosts", h->host_id);
	int rc = ctl_api_get(r->api, path.text, &host);
	if (rc != CTL_OK)
		return rc;
	size_t i;
	json_t *svc;
	json_array_foreach(json_object_get(host, "services"), i, svc) {
		const char *name = ctl_str(svc, "name", "");
		for (size_t k = 0; k < N_EXCHANGE && h->n_services < N_EXCHANGE; k++)
			if (strcmp(name, exchange_services[k]) == 0)
				h->services[h->n_services++] = (char *)exchange_services[k];
	}
	json_decref(host);
	return CTL_OK;
}

static int pick_hosts(struct repair *r, const char *host, const char *status, const char *wave)
{
	int rc;
	if (host) {
		rc = add_host(r, host);
	} else {
		struct ctl_path path;
		json_t *items;
		ctl_path_init(&path, "/api/v1/hosts", NULL);
		ctl_path_param(&path, "status", status);
		ctl_path_param(&path, "wave", wave);
		rc = ctl_api_get_items(r->api, path.text, 0, &items);
		size_t i;
		json_t *item;
		json_array_foreach(items, i, item) {
			/* A planned host that never connected has nothing to repair. */
			if (rc == CTL_OK &&
			    strcmp(ctl_str(item, "connectivity", ""), "NEVER_SEEN") != 0)
				rc = add_host(r, ctl_str(item, "host_id", "?"));
		}
		json_decref(items);
	}
	for (size_t i = 0; rc == CTL_OK && i < r->n; i++)
		rc = load_services(r, &r->hosts[i]);
	if (rc == CTL_OK && r->n == 0)
		rc = ctl_fail("repair", "no host matches");
	return rc;
}

/* ---- commands ---- */

static int seal(struct repair *r, struct host_plan *h, const char *id,
		Exfleet__SealedSecret *out, char *err, size_t errlen)
{
	return seal_secret(h->pub, h->host_id, id, (const uint8_t *)r->password, r->password_len,
			   out, err, errlen);
}

/* One host's step as a command: its body and what the body points to. */
struct step_command {
	struct host_plan *h;
	char id[33];
	Exfleet__CommandBody body;
	Exfleet__SealedSecret sealed;
	Exfleet__VerifyCredentials verify;
	Exfleet__GrantRights grant;
	Exfleet__SetServiceCredentials set;
	Exfleet__RestartServices restart;
	Exfleet__ReapplyServicePack sp;
	Exfleet__Rescan rescan;
};

/* Builds h's current step; -1 with err when it cannot be. */
static int step_build(struct repair *r, struct host_plan *h, int64_t now, struct step_command *sc,
		      char *err, size_t errlen)
{
	sc->h = h;
	exfleet__sealed_secret__init(&sc->sealed);
	if (ctl_command_id(sc->id) < 0) {
		snprintf(err, errlen, "no randomness for a command id");
		return -1;
	}
	Exfleet__CommandBody *body = &sc->body;
	exfleet__command_body__init(body);
	body->id = sc->id;
	body->target_host_id = h->host_id;
	body->issued_at_ms = now;
	body->expires_at_ms = now + r->expires_ms;
	switch (h->step) {
	case STEP_VERIFY:
		exfleet__verify_credentials__init(&sc->verify);
		sc->verify.account = (char *)r->account;
		sc->verify.password = &sc->sealed;
		body->action_case = EXFLEET__COMMAND_BODY__ACTION_VERIFY_CREDENTIALS;
		body->verify_credentials = &sc->verify;
		return seal(r, h, sc->id, &sc->sealed, err, errlen) < 0 ? -1 : 0;
	case STEP_GRANT:
		exfleet__grant_rights__init(&sc->grant);
		sc->grant.account = (char *)r->account;
		sc->grant.rights = (char **)rights;
		sc->grant.n_rights = 3;
		body->action_case = EXFLEET__COMMAND_BODY__ACTION_GRANT_RIGHTS;
		body->grant_rights = &sc->grant;
		return 0;
	case STEP_SET:
		exfleet__set_service_credentials__init(&sc->set);
		sc->set.account = (char *)r->account;
		sc->set.password = &sc->sealed;
		sc->set.services = h->services;
		sc->set.n_services = h->n_services;
		body->action_case = EXFLEET__COMMAND_BODY__ACTION_SET_SERVICE_CREDENTIALS;
		body->set_service_credentials = &sc->set;
		return seal(r, h, sc->id, &sc->sealed, err, errlen) < 0 ? -1 : 0;
	case STEP_RESTART:
		exfleet__restart_services__init(&sc->restart);
		sc->restart.services = h->services;
		sc->restart.n_services = h->n_services;
		body->action_case = EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES;
		body->restart_services = &sc->restart;
		return 0;
	case STEP_SERVICE_PACK:
		exfleet__reapply_service_pack__init(&sc->sp);
		body->action_case = EXFLEET__COMMAND_BODY__ACTION_REAPPLY_SERVICE_PACK;
		body->reapply_service_pack = &sc->sp;
		return 0;
	default:
		exfleet__rescan__init(&sc->rescan);
		body->action_case = EXFLEET__COMMAND_BODY__ACTION_RESCAN;
		body->rescan = &sc->rescan;
		return 0;
	}
}

/* Submits one signed step; a refusal fails the host. */
static void step_post(struct repair *r, struct step_command *sc, const Exfleet__Command *cmd)
{
	struct host_plan *h = sc->h;
	json_t *answer = NULL;
	r->api->quiet = 1;
	int rc = ctl_post_command(r->api, h->host_id, cmd, &answer);
	r->api->quiet = 0;
	json_decref(answer);
	if (rc == CTL_UNREACHABLE) {
		fprintf(stderr, "exfleetctl repair: %s\n", r->api->message);
		r->stopped = 1;
	}
	if (rc != 0)
		host_failed(r, h, "%s: not sent: %s", step_names[h->step], r->api->message);
	else
		snprintf(h->command_id, sizeof(h->command_id), "%s", sc->id);
}

/* Signs the next step of each of hosts[0..n-1] as one batch, one signature
 * for the round however many hosts are in it, and submits them. */
static void submit_steps(struct repair *r, struct host_plan **hosts, size_t n)
{
	struct step_command *sc = calloc(n, sizeof(*sc));
	const Exfleet__CommandBody **bodies = calloc(n, sizeof(*bodies));
	Exfleet__Command *cmds = calloc(n, sizeof(*cmds));
	char err[512];
	size_t built = 0;
	if (!sc || !bodies || !cmds) {
		for (size_t i = 0; i < n; i++)
			host_failed(r, hosts[i], "%s: not sent: out of memory",
				    step_names[hosts[i]->step]);
		goto out;
	}
	int64_t now = util_now_ms();
	for (size_t i = 0; i < n; i++) {
		if (step_build(r, hosts[i], now, &sc[built], err, sizeof(err)) < 0) {
			host_failed(r, hosts[i], "%s: not sent: %s", step_names[hosts[i]->step], err);
			seal_secret_free(&sc[built].sealed);
			continue;
		}
		bodies[built] = &sc[built].body;
		built++;
	}
	if (built > 0 && sign_commands(bodies, built, r->key, r->cert, cmds, err, sizeof(err)) < 0) {
		for (size_t i = 0; i < built; i++)
			host_failed(r, sc[i].h, "%s: not sent: cannot sign: %s",
				    step_names[sc[i].h->step], err);
		built = 0;
	}
	for (size_t i = 0; i < built; i++) {
		if (!r->stopped)
			step_post(r, &sc[i], &cmds[i]);
		sign_command_free(&cmds[i]);
	}
out:
	for (size_t i = 0; sc && i < n; i++)
		seal_secret_free(&sc[i].sealed);
	free(cmds);
	free(bodies);
	free(sc);
}

/* What the collector says of h's step in flight: move on, or fail it. */
static void check_step(struct repair *r, struct host_plan *h, json_t *command,
		       int64_t deadline)
{
	const char *state = ctl_str(command, "state", "?");
	const char *reason = ctl_str(json_object_get(command, "result"), "reason", "");
	h->seen = 1;
	if (strcmp(state, "succeeded") == 0) {
		fprintf(r->progress, "  %-10s %-24s ok\n", h->host_id, step_names[h->step]);
		h->command_id[0] = '\0';
		h->step = h->step == STEP_SERVICE_PACK ? STEP_RESCAN
			  : h->step == STEP_RESCAN     ? STEP_DONE
						       : h->step + 1;
		if (h->step == STEP_SERVICE_PACK && !r->service_pack)
			h->step = STEP_RESCAN;
		return;
	}
	if (strcmp(state, "queued") == 0 || strcmp(state, "delivered") == 0) {
		if (util_now_ms() >= deadline)
			host_failed(r, h, "%s timed out: no result in time (still %s)",
				    step_names[h->step], state);
		return;
	}
	/* The agent's reason names the step, its target and the Win32 error. */
	host_failed(r, h, "%s %s: %s", step_names[h->step], state,
		    reason[0] ? reason : "no reason given");
}

/* One look at the steps in flight among hosts [from, to): the commands,
 * newest first, page after page until each one in flight was seen. */
static void poll_steps(struct repair *r, size_t from, size_t to, int64_t deadline)
{
	size_t pending = 0;
	for (size_t i = from; i < to; i++) {
		r->hosts[i].seen = 0;
		pending += !r->hosts[i].failed && r->hosts[i].command_id[0];
	}
	json_int_t offset = 0;
	while (pending > 0) {
		char path[64];
		json_t *page;
		snprintf(path, sizeof(path), "/api/v1/commands?offset=%lld", (long long)offset);
		int rc = ctl_api_get(r->api, path, &page);
		if (rc != CTL_OK) {
			r->stopped = rc == CTL_UNREACHABLE;
			return;
		}
		size_t k;
		json_t *command;
		json_array_foreach(json_object_get(page, "items"), k, command) {
			const char *id = ctl_str(command, "command_id", "");
			for (size_t i = from; i < to; i++) {
				struct host_plan *h = &r->hosts[i];
				if (!h->failed && !h->seen && strcmp(h->command_id, id) == 0) {
					check_step(r, h, command, deadline);
					pending--;
				}
			}
		}
		json_t *next = json_object_get(page, "next");
		offset = json_integer_value(next);
		int more = json_is_integer(next);
		json_decref(page);
		if (!more)
			break;
	}
	/* Not listed at all: the collector lost it, or never had it. */
	for (size_t i = from; i < to && util_now_ms() >= deadline; i++) {
		struct host_plan *h = &r->hosts[i];
		if (!h->failed && h->command_id[0] && !h->seen)
			host_failed(r, h, "%s: the collector does not list command %s",
				    step_names[h->step], h->command_id);
	}
}

/* Runs the plans of hosts [from, to) together until each is done or failed. */
static void run_plans(struct repair *r, size_t from, size_t to)
{
	int64_t deadline = util_now_ms() + r->expires_ms;
	struct host_plan **due = malloc((to - from) * sizeof(*due));
	if (!due) {
		for (size_t i = from; i < to; i++)
			if (!r->hosts[i].failed && r->hosts[i].step != STEP_DONE)
				host_failed(r, &r->hosts[i], "%s: not sent: out of memory",
					    step_names[r->hosts[i].step]);
		return;
	}
	while (!r->stopped) {
		size_t busy = 0, in_flight = 0, ndue = 0;
		for (size_t i = from; i < to; i++) {
			struct host_plan *h = &r->hosts[i];
			if (h->failed || h->step == STEP_DONE)
				continue;
			busy++;
			if (!h->command_id[0])
				due[ndue++] = h;
		}
		if (ndue)
			submit_steps(r, due, ndue);
		for (size_t i = from; i < to; i++)
			in_flight += !r->hosts[i].failed && r->hosts[i].command_id[0];
		if (busy == 0 || r->stopped)
			break;
		if (in_flight) {
			uv_sleep(POLL_MS);
			poll_steps(r, from, to, deadline);
		}
	}
	free(due);
}

/* ---- setup ---- */

static int read_password(struct repair *r, const char *file)
{
	char buf[PASSWORD_MAX + 2];
	FILE *in = file ? fopen(file, "r") : fopen("/dev/tty", "r+");
	if (!in)
		return ctl_fail("repair", "cannot read the password from %s",
				file ? file : "the terminal (give --password-file)");
	/* No stdio buffer of our own: the password stays in buf, wiped below. */
	setvbuf(in, NULL, _IONBF, 0);
	struct termios old, quiet;
	int tty = !file && tcgetattr(fileno(in), &old) == 0;
	if (tty) {
		fprintf(in, "password for %s: ", r->account);
		fflush(in);
		quiet = old;
		quiet.c_lflag &= (tcflag_t)~ECHO;
		tcsetattr(fileno(in), TCSANOW, &quiet);
	}
	char *line = fgets(buf, sizeof(buf), in);
	if (tty) {
		tcsetattr(fileno(in), TCSANOW, &old);
		fputc('\n', in);
	}
	fclose(in);
	size_t len = line ? strcspn(buf, "\r\n") : 0;
	int rc = CTL_OK;
	if (!line || len == 0 || len > PASSWORD_MAX) {
		rc = ctl_fail("repair", "no password read (or longer than %d characters)",
			      PASSWORD_MAX);
	} else {
		memcpy(r->password, buf, len);
		r->password_len = len;
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	return rc;
}

/* Standard base64 to bytes: the length, or -1. */
static int base64_decode(const char *text, uint8_t *out, size_t max)
{
	size_t len = strlen(text);
	if (len == 0 || len % 4 != 0 || len / 4 * 3 > max || len > 4096)
		return -1;
	int n = EVP_DecodeBlock(out, (const unsigned char *)text, (int)len);
	if (n < 0)
		return -1;
	return n - (text[len - 1] == '=') - (text[len - 2] == '=');
}

/* The host's sealing key, from the collector, checked against the agent's
 * certificate and our CA: a collector cannot slip in a key of its own. */
static void load_sealing(struct repair *r, struct host_plan *h)
{
	struct ctl_path path;
	json_t *j = NULL;
	ctl_path_init(&path, "/api/v1/hosts", h->host_id);
	snprintf(path.text + path.len, sizeof(path.text) - path.len, "/sealing");
	r->api->quiet = 1;
	int rc = ctl_api_get(r->api, path.text, &j);
	r->api->quiet = 0;
	if (rc != CTL_OK) {
		if (rc == CTL_UNREACHABLE) {
			fprintf(stderr, "exfleetctl repair: %s\n", r->api->message);
			r->stopped = 1;
		}
		host_failed(r, h, "no sealing key: %s", r->api->message);
		return;
	}
	uint8_t pub[SEAL_KEY_LEN + 3], sig[512];
	int pub_len = base64_decode(ctl_str(j, "public_key", ""), pub, sizeof(pub));
	int sig_len = base64_decode(ctl_str(j, "signature", ""), sig, sizeof(sig));
	const char *pem = ctl_str(j, "agent_certificate", "");
	BIO *bio = BIO_new_mem_buf(pem, -1);
	X509 *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	char err[512];
	if (pub_len != SEAL_KEY_LEN || sig_len <= 0)
		host_failed(r, h, "sealing key refused: the collector's copy is malformed");
	else if (!cert)
		host_failed(r, h, "sealing key refused: the agent certificate does not parse");
	else if (seal_key_verify(r->verifier, cert, h->host_id, pub, sig, (size_t)sig_len, err,
				 sizeof(err)) < 0)
		host_failed(r, h, "sealing key refused: %s", err);
	else {
		memcpy(h->pub, pub, SEAL_KEY_LEN);
		h->sealing_ok = 1;
	}
	X509_free(cert);
	json_decref(j);
}

static size_t failures(const struct repair *r, size_t from, size_t to)
{
	size_t n = 0;
	for (size_t i = from; i < to; i++)
		n += r->hosts[i].failed;
	return n;
}

static void dry_run(struct repair *r)
{
	json_t *plans = r->api->json ? json_array() : NULL;
	for (size_t i = 0; i < r->n; i++) {
		struct host_plan *h = &r->hosts[i];
		char services[128] = "";
		for (size_t k = 0; k < h->n_services; k++)
			snprintf(services + strlen(services), sizeof(services) - strlen(services),
				 "%s%s", k ? ", " : " ", h->services[k]);
		char plan[512];
		if (r->service_pack)
			snprintf(plan, sizeof(plan), "reapply-service-pack, rescan");
		else
			snprintf(plan, sizeof(plan),
				 "verify-credentials %s; grant-rights SeServiceLogonRight, "
				 "SeTcbPrivilege, SeRestorePrivilege; set-service-credentials%s; "
				 "restart-services; rescan",
				 r->account, services);
		if (plans)
			json_array_append_new(plans, json_pack("{s:s, s:s}", "host_id", h->host_id,
							       "plan", plan));
		else
			printf("%s: %s\n", h->host_id, plan);
	}
	if (plans) {
		json_t *j = json_pack("{s:b, s:o}", "dry_run", 1, "hosts", plans);
		ctl_print_json(j);
		json_decref(j);
	} else {
		printf("dry run: %zu host%s, nothing sent\n", r->n, r->n == 1 ? "" : "s");
	}
}

/* Hosts whose POP3/IMAP users still fail after the repair need the
 * service pack: a JSON array of their ids. */
static json_t *needing_service_pack(struct repair *r)
{
	json_t *items = NULL, *ids = json_array();
	if (ctl_api_get_items(r->api, "/api/v1/hosts?status=NEEDS_SP_REINSTALL", 0, &items) !=
	    CTL_OK)
		return ids;
	size_t k;
	json_t *item;
	json_array_foreach(items, k, item)
		for (size_t i = 0; i < r->n; i++)
			if (strcmp(ctl_str(item, "host_id", ""), r->hosts[i].host_id) == 0)
				json_array_append_new(ids, json_string(r->hosts[i].host_id));
	json_decref(items);
	return ids;
}

static void summary(struct repair *r, int canary_stopped)
{
	size_t done = 0, failed = failures(r, 0, r->n);
	for (size_t i = 0; i < r->n; i++)
		done += r->hosts[i].step == STEP_DONE;
	json_t *sp = r->service_pack || r->stopped ? json_array() : needing_service_pack(r);
	if (r->api->json) {
		json_t *hosts = json_array();
		for (size_t i = 0; i < r->n; i++) {
			struct host_plan *h = &r->hosts[i];
			const char *result = "not touched";
			if (h->step == STEP_DONE)
				result = "repaired";
			else if (h->failed)
				result = "failed";
			json_array_append_new(hosts,
					      json_pack("{s:s, s:s, s:s?}", "host_id", h->host_id,
							"result", result, "failure",
							h->failed ? h->failure : NULL));
		}
		json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:b, s:o, s:O}", "hosts",
				      (json_int_t)r->n, "repaired", (json_int_t)done, "failed",
				      (json_int_t)failed, "not_touched",
				      (json_int_t)(r->n - done - failed), "canary_stopped",
				      canary_stopped, "results", hosts, "needs_service_pack", sp);
		ctl_print_json(j);
		json_decref(j);
		json_decref(sp);
		return;
	}
	printf("\n%zu host%s: %zu repaired, %zu failed, %zu not touched\n", r->n,
	       r->n == 1 ? "" : "s", done, failed, r->n - done - failed);
	for (size_t i = 0; i < r->n; i++)
		if (r->hosts[i].failed)
			printf("  %s: %s\n", r->hosts[i].host_id, r->hosts[i].failure);
	size_t k;
	json_t *id;
	json_array_foreach(sp, k, id) {
		printf("  %s: POP3/IMAP still fail: run exfleetctl repair --service-pack --host %s\n",
		       json_string_value(id), json_string_value(id));
	}
	if (!r->service_pack && json_array_size(sp) == 0)
		printf("If POP3/IMAP keep failing on a repaired host, it becomes "
		       "NEEDS_SP_REINSTALL: then run exfleetctl repair --service-pack for it.\n");
	json_decref(sp);
}

int ctl_repair(int argc, char **argv)
{
	static const struct option opts[] = {
		{"host", required_argument, NULL, 'H'},
		{"status", required_argument, NULL, 's'},
		{"wave", required_argument, NULL, 'w'},
		{"account", required_argument, NULL, 'a'},
		{"password-file", required_argument, NULL, 'p'},
		{"canary", required_argument, NULL, 'c'},
		{"max-failure-rate", required_argument, NULL, 'm'},
		{"dry-run", no_argument, NULL, 'n'},
		{"service-pack", no_argument, NULL, 'S'},
		{"operator-cert", required_argument, NULL, 'C'},
		{"operator-key", required_argument, NULL, 'K'},
		{"crl", required_argument, NULL, 'R'},
		{"expires", required_argument, NULL, 'e'},
		CTL_JSON_OPTION,
		CTL_CONN_OPTIONS,
		{NULL, 0, NULL, 0}};
	const char *host = NULL, *status = NULL, *wave = NULL, *password_file = NULL;
	const char *cert_file = NULL, *key_file = NULL, *crl = NULL;
	long canary = 0;
	double max_rate = 0;
	int dry = 0, c;
	struct ctl_api api = {.what = "repair"};
	struct repair r = {.api = &api, .expires_ms = 300000, .progress = stdout};
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		char *end = NULL;
		switch (c) {
		case 'H':
			host = optarg;
			break;
		case 's':
			status = optarg;
			break;
		case 'w':
			wave = optarg;
			break;
		case 'a':
			r.account = optarg;
			break;
		case 'p':
			password_file = optarg;
			break;
		case 'n':
			dry = 1;
			break;
		case 'S':
			r.service_pack = 1;
			break;
		case 'C':
			cert_file = optarg;
			break;
		case 'K':
			key_file = optarg;
			break;
		case 'R':
			crl = optarg;
			break;
		case 'c':
			canary = strtol(optarg, &end, 10);
			if (end == optarg || *end || canary < 1)
				return ctl_usage_error("repair", "repair",
						       "--canary '%s' is not a positive number",
						       optarg);
			break;
		case 'm':
			max_rate = strtod(optarg, &end);
			if (end == optarg || *end || !(max_rate >= 0 && max_rate <= 1))
				return ctl_usage_error(
				    "repair", "repair",
				    "--max-failure-rate '%s' is not between 0 and 1", optarg);
			break;
		case 'e':
			if (ctl_parse_duration(optarg, &r.expires_ms) < 0 ||
			    r.expires_ms > 86400000)
				return ctl_usage_error(
				    "repair", "repair",
				    "--expires '%s' is not like 90s or 5m (at most "
				    "24h)",
				    optarg);
			break;
		case 'h':
			fputs(repair_usage, stdout);
			return CTL_OK;
		default:
			if (ctl_api_option(&api, c, argv) != CTL_OK)
				return CTL_USAGE;
		}
	}
	if (optind != argc)
		return ctl_usage_error("repair", "repair", "unexpected argument '%s'",
				       argv[optind]);
	if (!!host + !!status + !!wave != 1)
		return ctl_usage_error("repair", "repair",
				       "choose hosts by one of --host, --status "
				       "and --wave");
	if (!r.service_pack && !r.account)
		return ctl_usage_error("repair", "repair", "--account DOMAIN\\NAME is required");
	if (!cert_file != !key_file)
		return ctl_usage_error("repair", "repair",
				       "give both --operator-cert and --operator-key, or neither");
	if (api.json)
		r.progress = stderr;
	char err[512];
	int rc = ctl_api_connect(&api);
	if (rc == CTL_OK)
		rc = pick_hosts(&r, host, status, wave);
	if (rc != CTL_OK)
		goto out;
	if (dry) {
		dry_run(&r);
		goto out;
	}
	rc = ctl_load_operator("repair", cert_file ? cert_file : api.cert_used,
			       key_file ? key_file : api.key_used, &r.cert, &r.key);
	if (rc != CTL_OK)
		goto out;
	r.verifier = sign_verifier_new(api.ca_used, crl, err, sizeof(err));
	if (!r.verifier) {
		rc = ctl_fail("repair", "%s", err);
		goto out;
	}
	if (!r.service_pack && (rc = read_password(&r, password_file)) != CTL_OK)
		goto out;
	for (size_t i = 0; i < r.n && !r.stopped; i++) {
		struct host_plan *h = &r.hosts[i];
		h->step = r.service_pack ? STEP_SERVICE_PACK : STEP_VERIFY;
		if (r.service_pack)
			continue;
		load_sealing(&r, h);
		if (h->sealing_ok && h->n_services == 0)
			host_failed(&r, h, "no Exchange service reported");
	}
	size_t first = canary > 0 && (size_t)canary < r.n ? (size_t)canary : r.n;
	int canary_stopped = 0;
	if (!r.stopped) {
		fprintf(r.progress, "repairing %zu host%s%s\n", first, first == 1 ? "" : "s",
			first < r.n ? " (canary)" : "");
		run_plans(&r, 0, first);
	}
	if (first < r.n && !r.stopped) {
		double rate = (double)failures(&r, 0, first) / (double)first;
		canary_stopped = rate > max_rate;
		if (canary_stopped) {
			fprintf(
			    r.progress,
			    "canary: %zu of %zu failed (%.0f%%), above --max-failure-rate %.0f%%: "
			    "the other %zu hosts were not touched\n",
			    failures(&r, 0, first), first, rate * 100, max_rate * 100, r.n - first);
		} else {
			fprintf(r.progress, "canary: %zu of %zu failed; repairing the other %zu\n",
				failures(&r, 0, first), first, r.n - first);
			run_plans(&r, first, r.n);
		}
	}
	summary(&r, canary_stopped);
	size_t done = 0;
	for (size_t i = 0; i < r.n; i++)
		done += r.hosts[i].step == STEP_DONE;
	rc = r.stopped ? CTL_UNREACHABLE : done < r.n ? CTL_FAILED : CTL_OK;
out:
	OPENSSL_cleanse(r.password, sizeof(r.password));
	sign_verifier_free(r.verifier);
	X509_free(r.cert);
	EVP_PKEY_free(r.key);
	free(r.hosts);
	ctl_api_close(&api);
	return rc;
}
