/* Commands on the agent, through the real spool and the simulated host:
 * what runs, what is refused and why, the dependency order of a restart,
 * and the replay cache surviving a restart of the agent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/pem.h>

#include "collect.h"
#include "command.h"
#include "log.h"
#include "pki.h"
#include "sign.h"
#include "sim_host.h"
#include "util.h"
#include "testutil.h"

static char dir[512], host_file[600], spool_dir[600], pki_dir[600], ca_file[700],
	crl_file[700];


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

static void result_cb(void *arg)
{
	((struct world *)arg)->results++;
}

static void world_open(struct world *w)
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
	char err[512];
	w->backend = probe_backend_find("sim");
	assert_non_null(w->backend);
	struct probe_settings ps = {.host_file = host_file, .rescan_ms = 10000};
	assert_int_equal(w->backend->open(&w->probe, &w->loop, &ps, err, sizeof(err)), 0);
	struct spool_options so = {.dir = spool_dir, .sync = SPOOL_SYNC_NONE};
	assert_int_equal(spool_open(&w->spool, &so, err, sizeof(err)), 0);
	assert_int_equal(collect_init(&w->collect, &w->cfg, w->backend, w->probe, w->spool, err,
				      sizeof(err)),
			 0);
	assert_int_equal(commands_init(&w->cmds, &w->loop, &w->cfg, &w->collect, result_cb, w, err,
				       sizeof(err)),
			 0);
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
	FILE *f = fopen(crt, "r");
	assert_non_null(f);
	op->cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	f = fopen(key, "r");
	assert_non_null(f);
	op->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(op->cert);
	assert_non_null(op->key);
}

/* A command as the collector relays it. */
static Exfleet__Command *command(const char *id, const char *target, int64_t expires_in_ms,
				 Exfleet__CommandBody__ActionCase action, char **services,
				 size_t n)
{
	Exfleet__CommandBody body = EXFLEET__COMMAND_BODY__INIT;
	Exfleet__Rescan rescan = EXFLEET__RESCAN__INIT;
	Exfleet__RestartServices restart = EXFLEET__RESTART_SERVICES__INIT;
	Exfleet__GrantRights grant = EXFLEET__GRANT_RIGHTS__INIT;
	body.id = (char *)id;
	body.target_host_id = (char *)target;
	body.issued_at_ms = util_now_ms();
	body.expires_at_ms = util_now_ms() + expires_in_ms;
	body.action_case = action;
	if (action == EXFLEET__COMMAND_BODY__ACTION_RESCAN) {
		body.rescan = &rescan;
	} else if (action == EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES) {
		restart.services = services;
		restart.n_services = n;
		body.restart_services = &restart;
	} else {
		grant.account = "CORP\\exsvc";
		body.grant_rights = &grant;
	}
	/* Signed as exfleetctl does, by whoever signer names; or not at all.
	 * The copy is what the collector relays: an unpacked Command. */
	Exfleet__Command signed_cmd = EXFLEET__COMMAND__INIT;
	if (signer) {
		char err[256];
		assert_int_equal(sign_command(&body, signer->key, signer->cert, &signed_cmd, err,
					      sizeof(err)),
				 0);
	} else {
		signed_cmd.body.len = exfleet__command_body__get_packed_size(&body);
		signed_cmd.body.data = malloc(signed_cmd.body.len);
		exfleet__command_body__pack(&body, signed_cmd.body.data);
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
	load_operator(&alice, PKI_ROLE_OPERATOR, "alice");
	load_operator(&victor, PKI_ROLE_VIEWER, "victor");
	struct sim_fleet_opts o = {.seed = 3, .domain = "CORP", .local_account_share = 0,
				   .password = "Secret-1"};
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

	commands_receive(&w.cmds, command("c4", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_GRANT_RIGHTS, NULL, 0));
	run_until_results(&w, 5);
	expect_result(&w, "c4", EXFLEET__COMMAND_STATUS__COMMAND_REJECTED,
		      "not enabled: this agent does not run GRANT_RIGHTS");
	world_close(&w);

	/* The replay cache outlives the agent. */
	world_open(&w);
	commands_receive(&w.cmds, command("c1", "EXCH001", 60000,
					  EXFLEET__COMMAND_BODY__ACTION_RESCAN, NULL, 0));
	run_until_results(&w, 1);
	expect_result(&w, "c1", EXFLEET__COMMAND_STATUS__COMMAND_REJECTED, "already seen");
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

int main(void)
{
	log_init(stderr, LOG_ERR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refusals_and_rescan),
		cmocka_unit_test(test_signatures),
		cmocka_unit_test(test_restart_in_dependency_order),
		cmocka_unit_test(test_restart_after_promotion_fails_with_1069),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
