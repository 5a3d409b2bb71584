/* Commands on the agent, through the real spool and the simulated host:
 * what runs, what is refused and why, the dependency order of a restart,
 * the replay cache surviving a restart of the agent, the sealing key, and
 * the repair actions with sealed passwords: a wrong password stops before
 * anything changes, a promoted host is repaired, and the password is never
 * written anywhere the agent writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <openssl/pem.h>

#include "collect.h"
#include "command.h"
#include "log.h"
#include "pki.h"
#include "seal.h"
#include "sign.h"
#include "sim_host.h"
#include "util.h"
#include "testutil.h"

static char dir[512], host_file[600], spool_dir[600], pki_dir[600], ca_file[700],
	crl_file[700], agent_crt[700], agent_key[700];
static FILE *log_file; /* everything the agent logs, searched for passwords */

#define PASSWORD "Secret-1"        /* CORP\exsvc's, as generated */
#define WRONG_PASSWORD "Wrong-pass-7"
#define ACCOUNT "CORP\\exsvc"


struct world {
	uv_loop_t loop;
	struct agent_config cfg;
	const struct probe_backend *backend;
	struct probe *probe;
	struct spool *spool;
	struct collect collect;
	struct commands cmds;
	int results;
};

static char *watched[] = {"MSExchangeSA", "MSExchangeDS", "MSExchangeIS", "MSExchangeMTA",
			  "MSExchangeIMC", "MSExchangeES"};
static char *levels[] = {"error", "warning"};
static char *all_actions[] = {"rescan", "restart_services", "verify_credentials", "grant_rights",
			      "set_service_credentials", "reapply_service_pack"};
static char *few_actions[] = {"rescan", "RESTART_SERVICES"}; /* any case */
static char *rights_allowed[] = {"SeServiceLogonRight", "SeTcbPrivilege", "SeRestorePrivilege"};

static void result_cb(void *arg)
{
	((struct world *)arg)->results++;
}

/* Opens the agent's parts as main.c does; returns what commands_init
 * returned, with everything closed again when that failed. */
static int world_try_open(struct world *w, char *err, size_t errlen)
{
	memset(w, 0, sizeof(*w));
	assert_int_equal(uv_loop_init(&w->loop), 0);
	w->cfg.host_id = "EXCH001";
	w->cfg.spool_dir = spool_dir;
	w->cfg.watched_services.items = watched;
	w->cfg.watched_services.count = 6;
	w->cfg.event_levels.items = levels;
	w->cfg.event_levels.count = 2;
	w->cfg.restart_timeout_ms = 5000;
	w->cfg.clock_skew_ms = 60000;
	w->cfg.ca_file = ca_file;
	w->cfg.crl_file = crl_file;
	w->cfg.key_file = agent_key;
	w->cfg.commands_enabled.items = all_actions;
	w->cfg.commands_enabled.count = 6;
	w->cfg.allowed_rights.items = rights_allowed;
	w->cfg.allowed_rights.count = 3;
	w->backend = probe_backend_find("sim");
	assert_non_null(w->backend);
	struct probe_settings ps = {.host_file = host_file, .rescan_ms = 10000};
	assert_int_equal(w->backend->open(&w->probe, &w->loop, &ps, err, errlen), 0);
	struct spool_options so = {.dir = spool_dir, .sync = SPOOL_SYNC_NONE};
	assert_int_equal(spool_open(&w->spool, &so, err, errlen), 0);
	assert_int_equal(collect_init(&w->collect, &w->cfg, w->backend, w->probe, w->spool, err,
				      errlen),
			 0);
	int rc = commands_init(&w->cmds, &w->loop, &w->cfg, &w->collect, result_cb, w, err, errlen);
	if (rc < 0) {
		collect_free(&w->collect);
		w->backend->close(w->probe, NULL, NULL);
		uv_run(&w->loop, UV_RUN_DEFAULT);
		spool_close(w->spool);
		assert_int_equal(uv_loop_close(&w->loop), 0);
	}
	return rc;
}

static void world_open(struct world *w)
{
	char err[512];
	if (world_try_open(w, err, sizeof(err)) < 0)
		fail_msg("commands_init: %s", err);
}

static void world_close(struct world *w)
{
	commands_close(&w->cmds);
	collect_free(&w->collect);
	w->backend->close(w->probe, NULL, NULL);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	spool_close(w->spool);
	assert_int_equal(uv_loop_close(&w->loop), 0);
}

struct operator {
	X509 *cert;
	EVP_PKEY *key;
};
static struct operator alice, victor;
static struct operator *signer = &alice; /* NULL: unsigned */
static int forge;                         /* flip a bit of the signature */

static void load_operator(struct operator *op, enum pki_role role, const char *name)
{
	char crt[700], key[700];
	assert_int_equal(pki_cert_path(pki_dir, role, name, crt, sizeof(crt), key, sizeof(key)), 0);
	op->cert = test_read_cert(crt);
	op->key = test_read_key(key);
	assert_non_null(op->cert);
	assert_non_null(op->key);
}

static int tamper;            /* flip a bit of the sealed password */
static const char *seal_for; /* seal to this command id instead */

/* A command as the collector relays it: body signed as exfleetctl does, by
 * whoever signer names, or not at all; then encoded and decoded, as the
 * collector's message arrives. */
static Exfleet__Command *sign_body(Exfleet__CommandBody *body)
{
	Exfleet__Command signed_cmd = EXFLEET__COMMAND__INIT;
	if (signer) {
		char err[256];
		assert_int_equal(sign_command(body, signer->key, signer->cert, &signed_cmd, err,
					      sizeof(err)),
				 0);
	} else {
		signed_cmd.body.len = exfleet__command_body__get_packed_size(body);
		signed_cmd.body.data = malloc(signed_cmd.body.len);
		exfleet__command_body__pack(body, signed_cmd.body.data);
	}
	if (forge)
		signed_cmd.signature.data[signed_cmd.signature.len / 2] ^= 1;
	size_t len = exfleet__command__get_packed_size(&signed_cmd);
	uint8_t *bytes = malloc(len);
	exfleet__command__pack(&signed_cmd, bytes);
	Exfleet__Command *cmd = exfleet__command__unpack(NULL, len, bytes);
	free(bytes);
	if (signer)
		sign_command_free(&signed_cmd);
	else
		free(signed_cmd.body.data);
	return cmd;
}

static void body_init(Exfleet__CommandBody *body, const char *id, const char *target,
		      int64_t expires_in_ms)
{
	exfleet__command_body__init(body);
	body->id = (char *)id;
	body->target_host_id = (char *)target;
	body->issued_at_ms = util_now_ms();
	body->expires_at_ms = util_now_ms() + expires_in_ms;
}

static Exfleet__Command *command(const char *id, const char *target, int64_t expires_in_ms,
				 Exfleet__CommandBody__ActionCase action, char **services,
				 size_t n)
{
	Exfleet__CommandBody body;
	Exfleet__Rescan rescan = EXFLEET__RESCAN__INIT;
	Exfleet__RestartServices restart = EXFLEET__RESTART_SERVICES__INIT;
	Exfleet__GrantRights grant = EXFLEET__GRANT_RIGHTS__INIT;
	Exfleet__ReapplyServicePack reapply = EXFLEET__REAPPLY_SERVICE_PACK__INIT;
	body_init(&body, id, target, expires_in_ms);
	body.action_case = action;
	if (action == EXFLEET__COMMAND_BODY__ACTION_RESCAN) {
		body.rescan = &rescan;
	} else if (action == EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES) {
		restart.services = services;
		restart.n_services = n;
		body.restart_services = &restart;
	} else if (action == EXFLEET__COMMAND_BODY__ACTION_REAPPLY_SERVICE_PACK) {
		body.reapply_service_pack = &reapply;
	} else {
		grant.account = ACCOUNT;
		grant.rights = services;
		grant.n_rights = n;
		body.grant_rights = &grant;
	}
	return sign_body(&body);
}

/* password sealed to the world's agent, as exfleetctl seals it. */
static void seal_password(struct world *w, const char *id, const char *password,
			  Exfleet__SealedSecret *out)
{
	char err[256];
	assert_int_equal(seal_secret(w->cmds.seal_public, "EXCH001", seal_for ? seal_for : id,
				     (const uint8_t *)password, strlen(password), out, err,
				     sizeof(err)),
			 0);
	if (tamper)
		out->ciphertext.data[out->ciphertext.len / 2] ^= 1;
}

static Exfleet__Command *verify_command(struct world *w, const char *id, const char *account,
					const char *password)
{
	Exfleet__CommandBody body;
	Exfleet__VerifyCredentials verify = EXFLEET__VERIFY_CREDENTIALS__INIT;
	Exfleet__SealedSecret sealed;
	body_init(&body, id, "EXCH001", 60000);
	seal_password(w, id, password, &sealed);
	verify.account = (char *)account;
	verify.password = &sealed;
	body.action_case = EXFLEET__COMMAND_BODY__ACTION_VERIFY_CREDENTIALS;
	body.verify_credentials = &verify;
	Exfleet__Command *cmd = sign_body(&body);
	seal_secret_free(&sealed);
	return cmd;
}

static Exfleet__Command *set_command(struct world *w, const char *id, char **services, size_t n,
				     const char *account, const char *password)
{
	Exfleet__CommandBody body;
	Exfleet__SetServiceCredentials set = EXFLEET__SET_SERVICE_CREDENTIALS__INIT;
	Exfleet__SealedSecret sealed;
	body_init(&body, id, "EXCH001", 60000);
	seal_password(w, id, password, &sealed);
	set.services = services;
	set.n_services = n;
	set.account = (char *)account;
	set.password = &sealed;
	body.action_case = EXFLEET__COMMAND_BODY__ACTION_SET_SERVICE_CREDENTIALS;
	body.set_service_credentials = &set;
	Exfleet__Command *cmd = sign_body(&body);
	seal_secret_free(&sealed);
	return cmd;
}

static void run_until_results(struct world *w, int n)
{
	int64_t end = util_now_ms() + 10000;
	while (w->results < n && util_now_ms() < end)
		uv_run(&w->loop, UV_RUN_ONCE);
	assert_int_equal(w->results, n);
}

/* The newest result in the spool. */
static Exfleet__CommandResult *last_result(struct world *w)
{
	struct spool_iter it;
	struct spool_record rec;
	Exfleet__CommandResult *r = NULL;
	assert_int_equal(spool_iter_init(w->spool, &it, 0), 0);
	while (spool_iter_next(&it, &rec) == 1) {
		if (rec.kind != SPOOL_RESULT)
			continue;
		if (r)
			exfleet__command_result__free_unpacked(r, NULL);
		r = exfleet__command_result__unpack(NULL, rec.len, rec.payload);
	}
	spool_iter_close(&it);
	assert_non_null(r);
	return r;
}

static void expect_result(struct world *w, const char *id, Exfleet__CommandStatus status,
			  const char *reason_part)
{
	Exfleet__CommandResult *r = last_result(w);
	assert_string_equal(r->command_id, id);
	assert_int_equal(r->status, status);
	if (reason_part && !strstr(r->reason, reason_part))
		fail_msg("reason '%s' lacks '%s'", r->reason, reason_part);
	assert_true(r->sequence > 0);
	exfleet__command_result__free_unpacked(r, NULL);
}

/* Runs one command to its result, which the caller frees. */
static Exfleet__CommandResult *run_command(struct world *w, Exfleet__Command *cmd)
{
	int want = w->results + 1;
	commands_receive(&w->cmds, cmd);
	run_until_results(w, want);
	return last_result(w);
}

static void expect_step(const Exfleet__CommandResult *r, size_t i, const char *step,
			const char *target, int ok, uint32_t win32_error)
{
	assert_true(i < r->n_steps);
	assert_string_equal(r->steps[i]->step, step);
	assert_string_equal(r->steps[i]->target, target);
	if (r->steps[i]->ok != ok || r->steps[i]->win32_error != win32_error)
		fail_msg("step %zu %s %s: ok %d, %u %s", i, step, target, r->steps[i]->ok,
			 r->steps[i]->win32_error, r->steps[i]->message);
}

/* The host file as it is on disk, to tell whether a command changed it. */
static char *host_text(void)
{
	char *text, err[256];
	size_t len;
	assert_int_equal(util_read_file(host_file, SIM_FILE_MAX, &text, &len, err, sizeof(err)), 0);
	return text;
}

static void expect_host_unchanged(char *before)
{
	char *after = host_text();
	assert_string_equal(before, after);
	free(after);
	free(before);
}

static struct sim_host *host_load(void)
{
	struct sim_host *h;
	char err[256];
	assert_int_equal(sim_host_load_file(host_file, &h, err, sizeof(err)), 0);
	return h;
}

static int account_holds(const char *account, const char *right)
{
	struct sim_host *h = host_load();
	char **rights;
	size_t n;
	int holds = 0;
	assert_int_equal(sim_host_account_rights(h, account, &rights, &n), 0);
	for (size_t i = 0; i < n; i++)
		holds |= strcmp(rights[i], right) == 0;
	sim_strings_free_array(rights, n);
	sim_host_free(h);
	return holds;
}

static int logon_cb(struct sim_host *h, void *arg)
{
	struct sim_logon_counts *pop3_imap4 = arg;
	sim_host_logon(h, 3, 3, &pop3_imap4[0], &pop3_imap4[1]);
	return 0;
}

static size_t auth_events(void)
{
	struct sim_host *h = host_load();
	size_t n = 0;
	for (size_t i = 0; i < h->n_events; i++)
		n += h->events[i].event_id == SIM_EVENT_POP3_AUTH &&
		     (strcmp(h->events[i].source, SIM_SOURCE_POP3) == 0 ||
		      strcmp(h->events[i].source, SIM_SOURCE_IMAP4) == 0);
	sim_host_free(h);
	return n;
}

/* Three POP3 and three IMAP4 client logons; returns those that failed, and
 * checks each failure logged its 13003. */
static uint64_t client_logons_failing(void)
{
	struct sim_logon_counts counts[2];
	char err[256];
	size_t before = auth_events();
	assert_int_equal(sim_host_edit(host_file, logon_cb, counts, err, sizeof(err)), 0);
	assert_int_equal(counts[0].refused + counts[1].refused, 0);
	assert_int_equal(auth_events() - before, counts[0].failed + counts[1].failed);
	return counts[0].failed + counts[1].failed;
}

static int setup(void **state)
{
	char err[512];
	assert_int_equal(test_tmpdir("test_command", dir, sizeof(dir)), 0);
	snprintf(host_file, sizeof(host_file), "%s/EXCH001.json", dir);
	snprintf(spool_dir, sizeof(spool_dir), "%s/spool", dir);
	snprintf(pki_dir, sizeof(pki_dir), "%s/pki", dir);
	snprintf(ca_file, sizeof(ca_file), "%s/ca.crt", pki_dir);
	snprintf(crl_file, sizeof(crl_file), "%s/crl.pem", pki_dir);
	assert_int_equal(pki_init(pki_dir, PKI_ALGO_ECDSA_P256, 0, err, sizeof(err)), 0);
	struct pki_issue_opts a = {.role = PKI_ROLE_OPERATOR, .name = "alice"};
	struct pki_issue_opts v = {.role = PKI_ROLE_VIEWER, .name = "victor"};
	assert_int_equal(pki_issue(pki_dir, &a, NULL, err, sizeof(err)), 0);
	assert_int_equal(pki_issue(pki_dir, &v, NULL, err, sizeof(err)), 0);
	struct pki_issue_opts ag = {.role = PKI_ROLE_AGENT, .name = "EXCH001"};
	assert_int_equal(pki_issue(pki_dir, &ag, NULL, err, sizeof(err)), 0);
	assert_int_equal(pki_cert_path(pki_dir, PKI_ROLE_AGENT, "EXCH001", agent_crt,
				       sizeof(agent_crt), agent_key, sizeof(agent_key)),
			 0);
	load_operator(&alice, PKI_ROLE_OPERATOR, "alice");
	load_operator(&victor, PKI_ROLE_VIEWER, "victor");
	struct sim_fleet_opts o = {.seed = 3, .domain = "CORP", .local_account_share = 0,
				   .password = PASSWORD};
	struct sim_host *h;
	assert_int_equal(sim_host_generate(&o, 0, "EXCH001", &h), 0);
	assert_int_equal(sim_host_save_file(h, host_file, err, sizeof(err)), 0);
	sim_host_free(h);
	return 0;
}

static int teardown(void **state)
{
	X509_free(alice.cert);
	EVP_PKEY_free(alice.key);
	X509_free(victor.cert);
	EVP_PKEY_free(victor.key);
	test_rmtree(dir);
	return 0;
}

static void test_refusals_and_rescan(void **state)
{
	struct world w;
	world_open(&w);
	commands_receive(&w.cmds, command("c1", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_RESCAN, NULL, 0));
	run_until_results(&w, 1);
	expect_result(&w, "c1", EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED, NULL);

	commands_receive(&w.cmds, command("c1", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_RESCAN, NULL, 0));
	run_until_results(&w, 2);
	expect_result(&w, "c1", EXFLEET__COMMAND_STATUS__COMMAND_REJECTED, "already seen");

	commands_receive(&w.cmds, command("c2", "EXCH002", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_RESCAN, NULL, 0));
	run_until_results(&w, 3);
	expect_result(&w, "c2", EXFLEET__COMMAND_STATUS__COMMAND_REJECTED,
		      "addressed to host 'EXCH002'");

	/* Expired beyond the allowed clock skew (60 s here). */
	commands_receive(&w.cmds, command("c3", "EXCH001", -120000,
					  EXFLEET__COMMAND_BODY__ACTION_RESCAN, NULL, 0));
	run_until_results(&w, 4);
	expect_result(&w, "c3", EXFLEET__COMMAND_STATUS__COMMAND_EXPIRED, "expired at");

	/* Each action runs only where [commands] enabled names it. */
	w.cfg.commands_enabled.items = few_actions;
	w.cfg.commands_enabled.count = 2;
	char *rights[] = {"SeTcbPrivilege"};
	char *before = host_text();
	commands_receive(&w.cmds, command("c4", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_GRANT_RIGHTS, rights, 1));
	run_until_results(&w, 5);
	expect_result(&w, "c4", EXFLEET__COMMAND_STATUS__COMMAND_REJECTED,
		      "not enabled: GRANT_RIGHTS is disabled in [commands] enabled");
	expect_host_unchanged(before);
	commands_receive(&w.cmds, command("c5", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_RESCAN, NULL, 0));
	run_until_results(&w, 6);
	expect_result(&w, "c5", EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED, NULL);
	world_close(&w);

	/* The replay cache outlives the agent. */
	world_open(&w);
	commands_receive(&w.cmds, command("c1", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_RESCAN, NULL, 0));
	run_until_results(&w, 1);
	expect_result(&w, "c1", EXFLEET__COMMAND_STATUS__COMMAND_REJECTED, "already seen");
	world_close(&w);
}

/* The sealing key is made once, kept private, survives restarts, and is
 * signed so that exfleetctl's check (seal_key_verify) accepts it. */
static void test_sealing_key(void **state)
{
	char path[700], err[512], reason[256];
	struct stat st;
	struct world w;
	world_open(&w);
	snprintf(path, sizeof(path), "%s/sealing.key", spool_dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	uint8_t pub[SEAL_KEY_LEN], zero[SEAL_KEY_LEN] = {0};
	memcpy(pub, w.cmds.seal_public, SEAL_KEY_LEN);
	assert_memory_not_equal(pub, zero, SEAL_KEY_LEN);

	struct sign_verifier *v = sign_verifier_new(ca_file, crl_file, err, sizeof(err));
	assert_non_null(v);
	X509 *cert = test_read_cert(agent_crt);
	assert_non_null(cert);
	if (seal_key_verify(v, cert, "EXCH001", w.cmds.seal_public, w.cmds.seal_signature,
			    w.cmds.seal_signature_len, reason, sizeof(reason)) < 0)
		fail_msg("the sealing key's signature: %s", reason);
	/* Signed for this host only. */
	assert_int_equal(seal_key_verify(v, cert, "EXCH002", w.cmds.seal_public,
					 w.cmds.seal_signature, w.cmds.seal_signature_len, reason,
					 sizeof(reason)),
			 UV_EACCES);
	X509_free(cert);
	sign_verifier_free(v);
	world_close(&w);

	world_open(&w);
	assert_memory_equal(w.cmds.seal_public, pub, SEAL_KEY_LEN);
	world_close(&w);

	/* A key others may read is refused, not used. */
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(world_try_open(&w, err, sizeof(err)), UV_EPERM);
	if (!strstr(err, "sealing_key") || !strstr(err, "chmod 600"))
		fail_msg("unexpected error: %s", err);
	assert_int_equal(chmod(path, 0600), 0);
	world_open(&w);
	assert_memory_equal(w.cmds.seal_public, pub, SEAL_KEY_LEN);
	world_close(&w);
}

/* Only an operator's signature makes a command run; each refusal says why. */
static void test_signatures(void **state)
{
	struct world w;
	world_open(&w);
	signer = NULL;
	commands_receive(&w.cmds, command("d1", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_RESCAN, NULL, 0));
	run_until_results(&w, 1);
	expect_result(&w, "d1", EXFLEET__COMMAND_STATUS__COMMAND_REJECTED, "no issuer certificate");

	signer = &victor;
	commands_receive(&w.cmds, command("d2", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_RESCAN, NULL, 0));
	run_until_results(&w, 2);
	expect_result(&w, "d2", EXFLEET__COMMAND_STATUS__COMMAND_REJECTED,
		      "signer 'victor' has role viewer, not operator");

	signer = &alice;
	forge = 1;
	commands_receive(&w.cmds, command("d3", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_RESCAN, NULL, 0));
	forge = 0;
	run_until_results(&w, 3);
	expect_result(&w, "d3", EXFLEET__COMMAND_STATUS__COMMAND_REJECTED, "bad signature");
	world_close(&w);
}

static void test_restart_in_dependency_order(void **state)
{
	struct world w;
	world_open(&w);
	/* Named out of order on purpose. */
	char *services[] = {"MSExchangeIS", "MSExchangeSA", "MSExchangeDS"};
	commands_receive(&w.cmds, command("a1", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES, services,
					  3));
	run_until_results(&w, 1);
	Exfleet__CommandResult *r = last_result(&w);
	if (r->status != EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED)
		fail_msg("restart failed: %s", r->reason);
	/* Every service stops after the services that depend on it and starts
	 * after those it depends on; the running dependents of the named ones
	 * (ES on IS, MTA on DS, IMC on MTA) come along. */
	const char *deps[][2] = {{"MSExchangeDS", "MSExchangeSA"}, {"MSExchangeIS", "MSExchangeDS"},
				 {"MSExchangeMTA", "MSExchangeDS"}, {"MSExchangeES", "MSExchangeIS"},
				 {"MSExchangeIMC", "MSExchangeMTA"}};
	size_t half = r->n_steps / 2;
	assert_true(half >= 5); /* SA, DS, IS and at least ES and MTA */
	for (size_t i = 0; i < r->n_steps; i++) {
		assert_true(r->steps[i]->ok);
		assert_string_equal(r->steps[i]->step, i < half ? "stop" : "start");
	}
	for (size_t k = 0; k < sizeof(deps) / sizeof(deps[0]); k++) {
		size_t stop_svc = 99, stop_dep = 99, start_svc = 99, start_dep = 99;
		for (size_t i = 0; i < r->n_steps; i++) {
			int stop = strcmp(r->steps[i]->step, "stop") == 0;
			if (strcmp(r->steps[i]->target, deps[k][0]) == 0)
				*(stop ? &stop_svc : &start_svc) = i;
			if (strcmp(r->steps[i]->target, deps[k][1]) == 0)
				*(stop ? &stop_dep : &start_dep) = i;
		}
		if (stop_svc == 99 && start_svc == 99)
			continue; /* not installed on this host (IMC is optional) */
		assert_true(stop_svc < stop_dep);   /* the dependent stops first */
		assert_true(start_dep < start_svc); /* and starts last */
	}
	exfleet__command_result__free_unpacked(r, NULL);

	char *unknown[] = {"MSExchangeXX"};
	commands_receive(&w.cmds, command("a2", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES, unknown,
					  1));
	run_until_results(&w, 2);
	expect_result(&w, "a2", EXFLEET__COMMAND_STATUS__COMMAND_FAILED, "1060");
	world_close(&w);
}

/* A service logon with the sealed password: right, wrong, unknown account,
 * tampered; nothing but the right one passes, and nothing changes the host. */
static void test_verify_credentials(void **state)
{
	struct world w;
	world_open(&w);
	char *before = host_text();
	Exfleet__CommandResult *r = run_command(&w, verify_command(&w, "e1", ACCOUNT, PASSWORD));
	assert_int_equal(r->status, EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED);
	assert_int_equal(r->n_steps, 1);
	expect_step(r, 0, "verify-credentials", ACCOUNT, 1, 0);
	exfleet__command_result__free_unpacked(r, NULL);

	r = run_command(&w, verify_command(&w, "e2", ACCOUNT, WRONG_PASSWORD));
	assert_int_equal(r->status, EXFLEET__COMMAND_STATUS__COMMAND_FAILED);
	assert_int_equal(r->n_steps, 1);
	expect_step(r, 0, "verify-credentials", ACCOUNT, 0, 1326);
	assert_non_null(strstr(r->reason, "verify-credentials " ACCOUNT ": 1326"));
	exfleet__command_result__free_unpacked(r, NULL);

	r = run_command(&w, verify_command(&w, "e3", "CORP\\nobody", PASSWORD));
	assert_int_equal(r->status, EXFLEET__COMMAND_STATUS__COMMAND_FAILED);
	expect_step(r, 0, "verify-credentials", "CORP\\nobody", 0, 1332);
	exfleet__command_result__free_unpacked(r, NULL);

	/* Altered on the way, or sealed for another command: refused unopened. */
	tamper = 1;
	commands_receive(&w.cmds, verify_command(&w, "e4", ACCOUNT, PASSWORD));
	tamper = 0;
	run_until_results(&w, 4);
	expect_result(&w, "e4", EXFLEET__COMMAND_STATUS__COMMAND_REJECTED,
		      "sealed secret does not open");
	seal_for = "e6";
	commands_receive(&w.cmds, verify_command(&w, "e5", ACCOUNT, PASSWORD));
	seal_for = NULL;
	run_until_results(&w, 5);
	expect_result(&w, "e5", EXFLEET__COMMAND_STATUS__COMMAND_REJECTED,
		      "sealed secret does not open");
	expect_host_unchanged(before);
	world_close(&w);
}

static int promote(struct sim_host *h, void *arg)
{
	return sim_host_dcpromo(h, 0) < 0 ? -1 : 0;
}

static void test_restart_after_promotion_fails_with_1069(void **state)
{
	char err[512];
	assert_int_equal(sim_host_edit(host_file, promote, NULL, err, sizeof(err)), 0);
	struct world w;
	world_open(&w);
	char *services[] = {"MSExchangeSA"};
	commands_receive(&w.cmds, command("b1", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES, services,
					  1));
	run_until_results(&w, 1);
	Exfleet__CommandResult *r = last_result(&w);
	assert_int_equal(r->status, EXFLEET__COMMAND_STATUS__COMMAND_FAILED);
	Exfleet__StepResult *last = r->steps[r->n_steps - 1];
	assert_string_equal(last->step, "start");
	assert_string_equal(last->target, "MSExchangeSA");
	assert_false(last->ok);
	assert_int_equal(last->win32_error, 1069);
	assert_non_null(strstr(r->reason, "start MSExchangeSA: 1069"));
	exfleet__command_result__free_unpacked(r, NULL);
	world_close(&w);
}

/* The exsvc services of the (promoted) host, and all its Exchange services. */
static size_t exchange_services(char **exsvc, size_t *n_exsvc, char **all)
{
	struct sim_host *h = host_load();
	size_t n = 0;
	*n_exsvc = 0;
	for (size_t i = 0; i < h->n_services; i++) {
		if (strncmp(h->services[i].name, "MSExchange", 10) != 0)
			continue;
		for (size_t k = 0; k < 6; k++)
			if (strcmp(watched[k], h->services[i].name) == 0) {
				all[n++] = watched[k];
				if (strcmp(h->services[i].logon_account, ACCOUNT) == 0)
					exsvc[(*n_exsvc)++] = watched[k];
			}
	}
	sim_host_free(h);
	return n;
}

static int service_password_is(const char *service, const char *password)
{
	struct sim_host *h = host_load();
	struct sim_service *s = sim_host_find_service(h, service);
	assert_non_null(s);
	int same = sim_password_matches(&s->password, password);
	sim_host_free(h);
	return same;
}

/* KB Q255269 on a promoted host, one action at a time, as exfleetctl's plan
 * runs them: verify, grant rights, set credentials, restart, and the
 * service pack for POP3/IMAP4. */
static void test_repair_promoted_host(void **state)
{
	struct world w;
	world_open(&w);
	char *exsvc[6], *all[6];
	size_t n_exsvc, n_all = exchange_services(exsvc, &n_exsvc, all);
	assert_true(n_exsvc >= 4); /* SA, DS, IS, MTA at least */

	/* dcpromo took the logon right, not the password: verified, with
	 * the missing right reported. */
	Exfleet__CommandResult *r = run_command(&w, verify_command(&w, "f1", ACCOUNT, PASSWORD));
	assert_int_equal(r->status, EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED);
	expect_step(r, 0, "verify-credentials", ACCOUNT, 1, 1385);
	exfleet__command_result__free_unpacked(r, NULL);

	char *rights[] = {"SeServiceLogonRight", "SeTcbPrivilege", "SeRestorePrivilege"};
	for (size_t i = 0; i < 3; i++)
		assert_false(account_holds(ACCOUNT, rights[i]));
	r = run_command(&w, command("f2", "EXCH001", 60000,
				    EXFLEET__COMMAND_BODY__ACTION_GRANT_RIGHTS, rights, 3));
	if (r->status != EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED)
		fail_msg("grant failed: %s", r->reason);
	assert_int_equal(r->n_steps, 3);
	for (size_t i = 0; i < 3; i++) {
		expect_step(r, i, "grant-rights", rights[i], 1, 0);
		assert_non_null(strstr(r->steps[i]->message, "held on re-read"));
		assert_true(account_holds(ACCOUNT, rights[i]));
	}
	exfleet__command_result__free_unpacked(r, NULL);

	/* Only the allowlist: one right outside it refuses them all. */
	char *before = host_text();
	char *debug[] = {"SeTcbPrivilege", "SeDebugPrivilege"};
	commands_receive(&w.cmds, command("f3", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_GRANT_RIGHTS, debug, 2));
	run_until_results(&w, 3);
	expect_result(&w, "f3", EXFLEET__COMMAND_STATUS__COMMAND_REJECTED,
		      "not allowed: SeDebugPrivilege is not in [commands] allowed_rights");
	expect_host_unchanged(before);

	/* The first failure stops: SA is set, the unknown service fails,
	 * DS is never touched. */
	char *stops[] = {"MSExchangeSA", "MSExchangeXX", "MSExchangeDS"};
	r = run_command(&w, set_command(&w, "f4", stops, 3, ACCOUNT, WRONG_PASSWORD));
	assert_int_equal(r->status, EXFLEET__COMMAND_STATUS__COMMAND_FAILED);
	assert_int_equal(r->n_steps, 2);
	expect_step(r, 0, "set-service-credentials", "MSExchangeSA", 1, 0);
	expect_step(r, 1, "set-service-credentials", "MSExchangeXX", 0, 1060);
	assert_non_null(strstr(r->reason, "set-service-credentials MSExchangeXX: 1060"));
	exfleet__command_result__free_unpacked(r, NULL);
	assert_false(service_password_is("MSExchangeSA", PASSWORD));
	assert_true(service_password_is("MSExchangeSA", WRONG_PASSWORD));
	assert_true(service_password_is("MSExchangeDS", PASSWORD));

	/* With a wrong password set, the service cannot log on. */
	char *sa[] = {"MSExchangeSA"};
	r = run_command(&w, command("f5", "EXCH001", 60000,
				    EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES, sa, 1));
	assert_int_equal(r->status, EXFLEET__COMMAND_STATUS__COMMAND_FAILED);
	assert_non_null(strstr(r->reason, "start MSExchangeSA: 1069"));
	exfleet__command_result__free_unpacked(r, NULL);

	r = run_command(&w, set_command(&w, "5e7c0ffee", exsvc, n_exsvc, ACCOUNT, PASSWORD));
	if (r->status != EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED)
		fail_msg("set failed: %s", r->reason);
	assert_int_equal(r->n_steps, n_exsvc);
	for (size_t i = 0; i < n_exsvc; i++) {
		expect_step(r, i, "set-service-credentials", exsvc[i], 1, 0);
		assert_non_null(strstr(r->steps[i]->message, "logs on as " ACCOUNT));
		assert_true(service_password_is(exsvc[i], PASSWORD));
	}
	exfleet__command_result__free_unpacked(r, NULL);

	r = run_command(&w, command("f6", "EXCH001", 60000,
				    EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES, all, n_all));
	if (r->status != EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED)
		fail_msg("restart failed: %s", r->reason);
	exfleet__command_result__free_unpacked(r, NULL);
	struct sim_host *h = host_load();
	for (size_t i = 0; i < n_all; i++)
		assert_int_equal(sim_host_find_service(h, all[i])->state, SIM_RUNNING);
	assert_true(h->pop3_imap_broken);
	sim_host_free(h);

	/* Credentials and rights are right, yet POP3/IMAP4 still fail until
	 * the service pack is reapplied. */
	assert_int_equal(client_logons_failing(), 6);

	before = host_text();
	r = run_command(&w, command("f7", "EXCH001", 60000,
				    EXFLEET__COMMAND_BODY__ACTION_REAPPLY_SERVICE_PACK, NULL, 0));
	assert_int_equal(r->status, EXFLEET__COMMAND_STATUS__COMMAND_REJECTED);
	assert_string_equal(r->reason,
			    "not enabled: no [commands] service_pack_installer configured");
	exfleet__command_result__free_unpacked(r, NULL);
	w.cfg.service_pack_installer = "/srv/exchange/sp3/update.exe";
	w.cfg.service_pack_args = "-q";
	w.cfg.commands_enabled.count = 5; /* all but reapply_service_pack */
	r = run_command(&w, command("f8", "EXCH001", 60000,
				    EXFLEET__COMMAND_BODY__ACTION_REAPPLY_SERVICE_PACK, NULL, 0));
	assert_int_equal(r->status, EXFLEET__COMMAND_STATUS__COMMAND_REJECTED);
	assert_string_equal(r->reason,
			    "not enabled: REAPPLY_SERVICE_PACK is disabled in [commands] enabled");
	exfleet__command_result__free_unpacked(r, NULL);
	expect_host_unchanged(before);

	w.cfg.commands_enabled.count = 6;
	r = run_command(&w, command("f9", "EXCH001", 60000,
				    EXFLEET__COMMAND_BODY__ACTION_REAPPLY_SERVICE_PACK, NULL, 0));
	if (r->status != EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED)
		fail_msg("reapply failed: %s", r->reason);
	expect_step(r, 0, "reapply-service-pack", "/srv/exchange/sp3/update.exe", 1, 0);
	exfleet__command_result__free_unpacked(r, NULL);
	assert_int_equal(client_logons_failing(), 0);

	/* A tampered password changes nothing, even where setting it would. */
	before = host_text();
	tamper = 1;
	Exfleet__Command *tampered = set_command(&w, "fa", exsvc, n_exsvc, ACCOUNT, WRONG_PASSWORD);
	tamper = 0;
	r = run_command(&w, tampered);
	assert_int_equal(r->status, EXFLEET__COMMAND_STATUS__COMMAND_REJECTED);
	assert_string_equal(r->reason,
			    "sealed secret does not open (tampered, or sealed to another host or "
			    "command)");
	assert_int_equal(r->n_steps, 0);
	exfleet__command_result__free_unpacked(r, NULL);
	expect_host_unchanged(before);
	world_close(&w);
}

/* Neither password ever reaches a file under the test directory (spool,
 * replay cache, host file) nor the agent's log. The search is shown to
 * work on what is there: the set command's id. */
static int file_holds(const char *path, const char *needle)
{
	char *text, err[256];
	size_t len, n = strlen(needle);
	assert_int_equal(util_read_file(path, 256u << 20, &text, &len, err, sizeof(err)), 0);
	int found = 0;
	for (size_t i = 0; !found && i + n <= len; i++)
		found = memcmp(text + i, needle, n) == 0;
	free(text);
	return found;
}

static size_t tree_holds(const char *path, const char *needle)
{
	uv_fs_t req;
	uv_dirent_t entry;
	size_t found = 0;
	assert_true(uv_fs_scandir(NULL, &req, path, 0, NULL) >= 0);
	while (uv_fs_scandir_next(&req, &entry) != UV_EOF) {
		char child[2048];
		snprintf(child, sizeof(child), "%s/%s", path, entry.name);
		if (entry.type == UV_DIRENT_DIR)
			found += tree_holds(child, needle);
		else
			found += (size_t)file_holds(child, needle);
	}
	uv_fs_req_cleanup(&req);
	return found;
}

static void test_secrets_never_written(void **state)
{
	char log_path[64];
	assert_true(tree_holds(spool_dir, "5e7c0ffee") > 0);
	assert_int_equal(tree_holds(dir, PASSWORD), 0);
	assert_int_equal(tree_holds(dir, WRONG_PASSWORD), 0);
	fflush(log_file);
	snprintf(log_path, sizeof(log_path), "/proc/self/fd/%d", fileno(log_file));
	assert_true(file_holds(log_path, "command 5e7c0ffee: SET_SERVICE_CREDENTIALS"));
	assert_false(file_holds(log_path, PASSWORD));
	assert_false(file_holds(log_path, WRONG_PASSWORD));
}

int main(void)
{
	log_file = tmpfile();
	if (!log_file)
		return 1;
	log_init(log_file, LOG_DEBUG);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sealing_key),
		cmocka_unit_test(test_refusals_and_rescan),
		cmocka_unit_test(test_signatures),
		cmocka_unit_test(test_restart_in_dependency_order),
		cmocka_unit_test(test_verify_credentials),
		cmocka_unit_test(test_restart_after_promotion_fails_with_1069),
		cmocka_unit_test(test_repair_promoted_host),
		/* last: it searches what every test before it wrote */
		cmocka_unit_test(test_secrets_never_written),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
