/* exfleet-collector: accepts the fleet's agents. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "api.h"
#include "collector.h"
#include "log.h"
#include "sign.h"
#include "util.h"

static const char usage[] =
	"usage: exfleet-collector --config FILE [--check]\n"
	"       exfleet-collector --version | --help | --config-reference\n"
	"\n"
	"Accepts exfleet agents over mutual TLS, stores what they report, classifies\n"
	"every host, relays operators' commands, and serves the operators' HTTPS API\n"
	"([api] listen, 127.0.0.1:8443 by default).\n"
	"\n"
	"  --config FILE        the collector's INI file (e.g. /etc/exfleet/collector.ini)\n"
	"  --check              validate the configuration, certificates and key, then exit\n"
	"  --config-reference   print every configuration key with its default\n"
	"  --version            print the version\n"
	"\n"
	"Signals: SIGTERM or SIGINT stops it cleanly; SIGHUP reads [tls] crl again\n"
	"(after a revocation or exfleetctl pki crl) and closes revoked agents' sessions.\n"
	"\n"
	"Exit status: 0 on a clean stop, 1 on a configuration or start-up error, 2 on usage.\n";

static uv_signal_t sigint, sigterm, sighup;
static struct store *store;
static struct api *api;
static int running; /* parts still stopping: the agent server, the API */

/* Once the agent server and the API are both down: commit what the
 * sessions sent, then close the store. */
static void part_stopped(void)
{
	if (--running > 0)
		return;
	uv_close((uv_handle_t *)&sigint, NULL);
	uv_close((uv_handle_t *)&sigterm, NULL);
	uv_close((uv_handle_t *)&sighup, NULL);
	store_close(store, NULL, NULL);
}

static void stopped_cb(struct server *srv)
{
	part_stopped();
}

static void api_stopped_cb(void *arg)
{
	part_stopped();
}

static void signal_cb(uv_signal_t *sig, int signum)
{
	static int stopping;
	if (stopping++)
		return;
	log_info("signal %d: stopping", signum);
	uv_signal_stop(&sighup);
	server_stop(sig->data, stopped_cb);
	if (api)
		api_stop(api, api_stopped_cb, NULL);
}

static struct sign_verifier *verifier;

/* SIGHUP: [tls] crl read again, for agents, the relay, the API and its
 * check of submitted commands. Each part that cannot read it keeps the CRL
 * it had, and says so. */
static void reload_cb(uv_signal_t *sig, int signum)
{
	(void)signum;
	struct server *srv = sig->data;
	const char *crl = srv->cfg->crl_file;
	char err[512];
	size_t revoked = 0;
	unsigned closed = 0;
	if (!crl || !crl[0]) {
		log_info("SIGHUP: no [tls] crl is configured: nothing to read again");
		return;
	}
	if (server_reload_crl(srv, &revoked, &closed, err, sizeof(err)) < 0) {
		log_err("SIGHUP: [tls] crl: %s; the CRL read before stays in force", err);
		return;
	}
	log_info("SIGHUP: CRL %s read again: %zu certificate%s revoked; %u agent session%s "
		 "closed",
		 crl, revoked, revoked == 1 ? "" : "s", closed, closed == 1 ? "" : "s");
	if (api && api_reload_crl(api, crl, err, sizeof(err)) < 0)
		log_err("SIGHUP: [api] %s; the API keeps the CRL read before", err);
	if (verifier && sign_verifier_reload_crl(verifier, err, sizeof(err)) < 0)
		log_err("SIGHUP: [api] command check: %s; it keeps the CRL read before", err);
}

static void api_stats_cb(struct api_stats *out, void *arg)
{
	struct server *srv = arg;
	out->sessions_waiting = srv->nwaiting;
	out->sessions_handshake = srv->nhandshakes;
	out->sessions_ready = srv->nready;
	out->sessions_hello = srv->nconns - srv->nwaiting - srv->nhandshakes - srv->nready;
	out->handshakes_in_progress = srv->nhandshakes;
	out->handshakes_completed = srv->handshakes_done;
	out->records_stored = store_committed(srv->store);
	out->acks_sent = srv->acks;
	out->store_queue_depth = store_queue_depth(srv->store);
	out->backpressure_pauses = srv->pauses;
	out->shed = srv->shed;
	out->emfile = srv->emfile;
}

/* An operator's command from the API: its signature checked as the agent
 * will check it (defence in depth: a command the agent would refuse is not
 * relayed), then stored and relayed at once. */
static int api_submit_cb(const struct api_command *c, char *err, size_t errlen, void *arg)
{
	struct server *srv = arg;
	Exfleet__Command *cmd = exfleet__command__unpack(NULL, c->len, c->envelope);
	if (!cmd) {
		snprintf(err, errlen, "not an encoded Command");
		return UV_EINVAL;
	}
	Exfleet__CommandBody *body = NULL;
	char signer[SIGN_OPERATOR_MAX] = "";
	int rc = sign_verify_command(verifier, cmd, c->host_id, util_now_ms(), 300000, &body,
				     signer, err, errlen);
	exfleet__command__free_unpacked(cmd, NULL);
	if (body)
		exfleet__command_body__free_unpacked(body, NULL);
	if (rc < 0) {
		/* A command the agent would refuse is not relayed, but someone
		 * tried: the audit log says who, for which host, and why. */
		json_t *d = json_pack("{s:s, s:s, s:s, s:s}", "command_id", c->command_id,
				      "host_id", c->host_id, "action", c->action, "reason", err);
		char *detail = d ? json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		char why[256];
		json_decref(d);
		if (!detail || store_audit_add(srv->store, util_now_ms(), c->submitted_by,
					       "command.refused", detail, why, sizeof(why)) < 0)
			log_err("api: the refusal of command %s was not audited: %s",
				c->command_id, detail ? why : "out of memory");
		free(detail);
		return rc;
	}
	rc = store_enqueue_command(srv->store, c->command_id, c->host_id, c->action, signer,
				   c->issued_at_ms, c->expires_at_ms, c->envelope, c->len, err,
				   errlen);
	if (rc == 0)
		relay_poll(&srv->relay);
	return rc;
}

/* An operator's wave plan from the API, already parsed and checked. */
static int api_import_cb(const struct store_wave *plan, size_t n, const char *by, char *err,
			 size_t errlen, void *arg)
{
	struct server *srv = arg;
	return store_import_plan(srv->store, plan, n, by, util_now_ms(), err, errlen);
}

static int start_api(uv_loop_t *loop, const struct collector_config *cfg, struct server *srv,
		     char *err, size_t errlen)
{
	struct api_config ac;
	api_config_default(&ac);
	ac.listen = cfg->api_listen;
	ac.ca_file = cfg->ca_file;
	ac.cert_file = cfg->cert_file;
	ac.key_file = cfg->key_file;
	ac.crl_file = cfg->crl_file;
	ac.store_path = cfg->store_path;
	ac.heartbeat_ms = cfg->heartbeat_ms;
	ac.max_body = (size_t)cfg->api_max_body;
	ac.page_max = (unsigned)cfg->api_page_max;
	ac.max_connections = (unsigned)cfg->api_max_connections;
	ac.query_budget_ms = cfg->api_query_budget_ms;
	ac.signin_ttl_ms = cfg->api_signin_ttl_ms;
	ac.session_ttl_ms = cfg->api_session_ttl_ms;
	ac.import_waves = api_import_cb;
	verifier = sign_verifier_new(cfg->ca_file, cfg->crl_file, err, errlen);
	if (!verifier)
		return UV_EINVAL;
	ac.stats = api_stats_cb;
	ac.submit_command = api_submit_cb;
	ac.arg = srv;
	return api_start(&api, loop, &ac, err, errlen);
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	int check = 0;
	log_set_prefix("exfleet-collector");
	util_ignore_sigpipe();
	srand((unsigned)util_now_ms() ^ (unsigned)uv_os_getpid());
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			path = argv[++i];
		} else if (strcmp(argv[i], "--check") == 0) {
			check = 1;
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("exfleet-collector %s\n", EXFLEET_VERSION);
			return 0;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(usage, stdout);
			return 0;
		} else if (strcmp(argv[i], "--config-reference") == 0) {
			collector_config_reference(stdout);
			return 0;
		} else {
			fprintf(stderr, "exfleet-collector: unknown argument '%s'\n%s", argv[i],
				usage);
			return 2;
		}
	}
	if (!path) {
		fprintf(stderr, "exfleet-collector: --config FILE is required\n%s", usage);
		return 2;
	}

	struct collector_config cfg;
	struct config_error cerr;
	if (collector_config_load(path, &cfg, &cerr) < 0) {
		fprintf(stderr, "%s\n", cerr.msg);
		collector_config_free(&cfg);
		return 1;
	}
	int rc = 1;
	SSL_CTX *tls = NULL;
	char err[512];
	struct status_rules rules = {0};
	if (collector_status_rules(&cfg, &rules, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		goto out;
	}
	struct tls_config tc = {cfg.ca_file, cfg.cert_file, cfg.key_file, cfg.crl_file,
				 cfg.allow_tls12};
	if (tls_ctx_new(&tls, 1, &tc, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: [tls] %s\n", path, err);
		goto out;
	}
	char tickets[1100];
	snprintf(tickets, sizeof(tickets), "%s.ticket-keys", cfg.store_path);
	const char *keys_file = cfg.ticket_keys_file ? cfg.ticket_keys_file : tickets;
	if (check) {
		/* A check writes nothing: a ticket key file is made at the first
		 * start, and only one that exists is checked here. */
		if (cfg.resumption && access(keys_file, F_OK) == 0 &&
		    util_check_private_file(keys_file, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s: [tls] ticket_keys: %s\n", path, err);
			goto out;
		}
		printf("%s: OK: collector %s listening on %s\n", path, cfg.id, cfg.listen);
		rc = 0;
		goto out;
	}
	if (cfg.resumption &&
	    tls_ctx_enable_tickets(tls, keys_file, cfg.ticket_rotation_ms, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: [tls] %s\n", path, err);
		goto out;
	}

	log_init(stderr, (enum log_level)cfg.log_level);
	uv_loop_t *loop = uv_default_loop();
	struct server srv;
	struct store_options so;
	store_options_default(&so);
	so.path = cfg.store_path;
	so.rules = &rules;
	so.queue_high = (size_t)cfg.store_queue_high;
	so.queue_low = (size_t)cfg.store_queue_low;
	so.event_max_age_ms = cfg.event_retention_ms;
	so.events_per_host = (uint64_t)cfg.events_per_host;
	if (store_open(&store, loop, &so, server_committed, &srv, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: [store] %s\n", path, err);
		uv_run(loop, UV_RUN_DEFAULT);
		uv_loop_close(loop);
		goto out;
	}
	if (server_start(&srv, loop, &cfg, tls, store, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		store_close(store, NULL, NULL);
		uv_run(loop, UV_RUN_DEFAULT);
		uv_loop_close(loop);
		goto out;
	}
	uv_signal_init(loop, &sigint);
	uv_signal_init(loop, &sigterm);
	uv_signal_init(loop, &sighup);
	sigint.data = sigterm.data = sighup.data = &srv;
	uv_signal_start(&sigint, signal_cb, SIGINT);
	uv_signal_start(&sigterm, signal_cb, SIGTERM);
	uv_signal_start(&sighup, reload_cb, SIGHUP);
	running = 1;
	if (cfg.api_listen && start_api(loop, &cfg, &srv, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: [api] %s\n", path, err);
		server_stop(&srv, stopped_cb);
		uv_run(loop, UV_RUN_DEFAULT);
		uv_loop_close(loop);
		goto out;
	}
	running += api != NULL;
	log_info("collector %s %s listening for agents on %s, store %s", cfg.id,
		 EXFLEET_VERSION, srv.bound, cfg.store_path);
	uint64_t soft, hard;
	uint64_t now_soft = util_raise_nofile(&soft, &hard);
	log_info("open files: soft limit %llu (was %llu), hard limit %llu: at most about %llu "
		 "agent sessions",
		 (unsigned long long)now_soft, (unsigned long long)soft, (unsigned long long)hard,
		 (unsigned long long)(now_soft > 64 ? now_soft - 64 : 0));
	if (api)
		log_info("HTTPS API for operators on %s", api_address(api));
	uv_run(loop, UV_RUN_DEFAULT);
	rc = uv_loop_close(loop) == 0 ? 0 : 1;
	log_info("collector stopped");
out:
	sign_verifier_free(verifier);
	free((void *)rules.auth);
	SSL_CTX_free(tls);
	collector_config_free(&cfg);
	return rc;
}
