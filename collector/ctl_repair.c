/* exfleetctl repair: the KB Q255269 repair, planned per host and run as a
 * sequence of operator-signed commands. For each host: verify the account's
 * password, grant the service account its rights, set the account and
 * password on each Exchange service, restart them in dependency order,
 * rescan. A failed step stops that host's plan. Passwords are sealed to each
 * agent's key (checked against its certificate first) and wiped here after
 * use; they never reach the collector in the clear.
 *
 * Like the other commands it uses the collector's store file directly until
 * the collector's API serves operators: commands are queued there, and their
 * outcomes read back. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "ctl.h"
#include "pki.h"
#include "seal.h"
#include "sign.h"
#include "store.h"
#include "util.h"

#define PASSWORD_MAX 256
#define POLL_MS 200

static const char repair_usage[] =
	"usage: exfleetctl repair (--host ID | --status STATUS | --wave WAVE)\n"
	"                         --account DOMAIN\\NAME [--password-file FILE]\n"
	"                         [--canary N] [--max-failure-rate R] [--dry-run]\n"
	"                         --operator-cert FILE --operator-key FILE --ca FILE [--crl FILE]\n"
	"                         [--timeout DURATION] [--store FILE]\n"
	"       exfleetctl repair --service-pack (--host ID | --status STATUS | --wave WAVE) ...\n"
	"\n"
	"Repairs Exchange 5.5 after dcpromo (KB Q255269). Per host, each step a\n"
	"signed command that must succeed before the next: verify-credentials,\n"
	"grant-rights (SeServiceLogonRight, SeTcbPrivilege, SeRestorePrivilege),\n"
	"set-service-credentials on the host's Exchange services, restart-services\n"
	"(dependency order), rescan. --service-pack instead reapplies the service\n"
	"pack (the installer the agent's own configuration names), for hosts still\n"
	"NEEDS_SP_REINSTALL.\n"
	"\n"
	"The password is read from --password-file (first line) or asked for without\n"
	"echo; it is sealed to each agent's key and wiped after use.\n"
	"--dry-run prints each host's plan and sends nothing. --canary N repairs N\n"
	"hosts first and goes on only if at most --max-failure-rate (default 0) of\n"
	"them failed. Progress is printed per host; the exit status is 1 if any\n"
	"host's repair failed.\n";

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

static const char *const exchange_services[] = {"MSExchangeSA", "MSExchangeDS", "MSExchangeIS",
						"MSExchangeMTA", "MSExchangeIMC", "MSExchangeES"};
static const char *const rights[] = {"SeServiceLogonRight", "SeTcbPrivilege",
				     "SeRestorePrivilege"};

struct host_plan {
	char host_id[65];
	char *services[6];      /* the Exchange services this host has */
	size_t n_services;
	uint8_t pub[SEAL_KEY_LEN];
	int sealing_ok;
	enum step step;
	char command_id[33];    /* of the step in flight, "" when none */
	int failed;
	char failure[300];
};

struct repair {
	struct store *st;
	struct sign_verifier *verifier;
	X509 *cert;
	EVP_PKEY *key;
	const char *account;
	char password[PASSWORD_MAX];
	size_t password_len;
	int service_pack;
	int64_t timeout_ms;
	struct host_plan *hosts;
	size_t n;
};

/* ---- choosing hosts ---- */

struct pick {
	struct repair *r;
	int failed;
};

static void pick_cb(const struct store_row *row, void *arg)
{
	struct pick *p = arg;
	const char *id = ctl_value(row, "host_id");
	const char *status = ctl_value(row, "status");
	if (!id || (status && strcmp(status, "NEVER_SEEN") == 0))
		return;
	struct host_plan *grown = realloc(p->r->hosts, (p->r->n + 1) * sizeof(*grown));
	if (!grown) {
		p->failed = 1;
		return;
	}
	p->r->hosts = grown;
	struct host_plan *h = &grown[p->r->n++];
	memset(h, 0, sizeof(*h));
	snprintf(h->host_id, sizeof(h->host_id), "%s", id);
}

static void services_cb(const struct store_row *row, void *arg)
{
	struct host_plan *h = arg;
	const char *name = ctl_value(row, "name");
	for (size_t i = 0; name && i < 6; i++)
		if (strcmp(name, exchange_services[i]) == 0 && h->n_services < 6)
			h->services[h->n_services++] = (char *)exchange_services[i];
}

/* ---- commands ---- */

static int seal(struct repair *r, struct host_plan *h, const char *id,
		Exfleet__SealedSecret *out, char *err, size_t errlen)
{
	return seal_secret(h->pub, h->host_id, id, (const uint8_t *)r->password, r->password_len,
			   out, err, errlen);
}

/* Signs and queues the current step of h; 0, or negative with h->failure. */
static int submit_step(struct repair *r, struct host_plan *h)
{
	uint8_t raw[16];
	char id[33];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -1;
	util_hex(raw, sizeof(raw), id);
	int64_t now = util_now_ms();
	Exfleet__CommandBody body = EXFLEET__COMMAND_BODY__INIT;
	body.id = id;
	body.target_host_id = h->host_id;
	body.issued_at_ms = now;
	body.expires_at_ms = now + r->timeout_ms;
	Exfleet__SealedSecret sealed = EXFLEET__SEALED_SECRET__INIT;
	Exfleet__VerifyCredentials verify = EXFLEET__VERIFY_CREDENTIALS__INIT;
	Exfleet__GrantRights grant = EXFLEET__GRANT_RIGHTS__INIT;
	Exfleet__SetServiceCredentials set = EXFLEET__SET_SERVICE_CREDENTIALS__INIT;
	Exfleet__RestartServices restart = EXFLEET__RESTART_SERVICES__INIT;
	Exfleet__ReapplyServicePack sp = EXFLEET__REAPPLY_SERVICE_PACK__INIT;
	Exfleet__Rescan rescan = EXFLEET__RESCAN__INIT;
	char err[512] = "";
	int rc = 0;
	const char *action = NULL;
	switch (h->step) {
	case STEP_VERIFY:
		rc = seal(r, h, id, &sealed, err, sizeof(err));
		verify.account = (char *)r->account;
		verify.password = &sealed;
		body.action_case = EXFLEET__COMMAND_BODY__ACTION_VERIFY_CREDENTIALS;
		body.verify_credentials = &verify;
		action = "VERIFY_CREDENTIALS";
		break;
	case STEP_GRANT:
		grant.account = (char *)r->account;
		grant.rights = (char **)rights;
		grant.n_rights = 3;
		body.action_case = EXFLEET__COMMAND_BODY__ACTION_GRANT_RIGHTS;
		body.grant_rights = &grant;
		action = "GRANT_RIGHTS";
		break;
	case STEP_SET:
		rc = seal(r, h, id, &sealed, err, sizeof(err));
		set.account = (char *)r->account;
		set.password = &sealed;
		set.services = h->services;
		set.n_services = h->n_services;
		body.action_case = EXFLEET__COMMAND_BODY__ACTION_SET_SERVICE_CREDENTIALS;
		body.set_service_credentials = &set;
		action = "SET_SERVICE_CREDENTIALS";
		break;
	case STEP_RESTART:
		restart.services = h->services;
		restart.n_services = h->n_services;
		body.action_case = EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES;
		body.restart_services = &restart;
		action = "RESTART_SERVICES";
		break;
	case STEP_SERVICE_PACK:
		body.action_case = EXFLEET__COMMAND_BODY__ACTION_REAPPLY_SERVICE_PACK;
		body.reapply_service_pack = &sp;
		action = "REAPPLY_SERVICE_PACK";
		break;
	default:
		body.action_case = EXFLEET__COMMAND_BODY__ACTION_RESCAN;
		body.rescan = &rescan;
		action = "RESCAN";
		break;
	}
	Exfleet__Command cmd = EXFLEET__COMMAND__INIT;
	uint8_t *envelope = NULL;
	if (rc == 0)
		rc = sign_command(&body, r->key, r->cert, &cmd, err, sizeof(err));
	if (rc == 0) {
		size_t len = exfleet__command__get_packed_size(&cmd);
		envelope = malloc(len);
		if (!envelope) {
			rc = -1;
		} else {
			exfleet__command__pack(&cmd, envelope);
			char signer[PKI_NAME_MAX + 1] = "?";
			enum pki_role role;
			pki_cert_identity(r->cert, signer, sizeof(signer), &role);
			rc = store_enqueue_command(r->st, id, h->host_id, action, signer, now,
						   body.expires_at_ms, envelope, len, err, sizeof(err));
		}
	}
	sign_command_free(&cmd);
	seal_secret_free(&sealed);
	free(envelope);
	if (rc < 0) {
		h->failed = 1;
		snprintf(h->failure, sizeof(h->failure), "%s: not sent: %s", step_names[h->step],
			 err[0] ? err : "out of memory");
		return -1;
	}
	snprintf(h->command_id, sizeof(h->command_id), "%s", id);
	return 0;
}

/* Looks at the step in flight; moves on, or marks the host failed. */
static void check_step(struct repair *r, struct host_plan *h, int64_t deadline)
{
	char state[32], reason[256];
	char *steps = NULL;
	if (store_command_outcome(r->st, h->command_id, state, sizeof(state), reason,
				  sizeof(reason), &steps) < 0)
		return;
	free(steps);
	if (strcmp(state, "succeeded") == 0) {
		printf("  %-10s %-24s ok\n", h->host_id, step_names[h->step]);
		h->command_id[0] = '\0';
		h->step = h->step == STEP_SERVICE_PACK ? STEP_RESCAN
			  : h->step == STEP_RESCAN     ? STEP_DONE
						       : h->step + 1;
		if (h->step == STEP_SERVICE_PACK && !r->service_pack)
			h->step = STEP_RESCAN;
		return;
	}
	if (strcmp(state, "queued") == 0 || strcmp(state, "delivered") == 0) {
		if (util_now_ms() < deadline)
			return;
		snprintf(reason, sizeof(reason), "no result in time (still %s)", state);
		snprintf(state, sizeof(state), "timed out");
	}
	h->failed = 1;
	/* The agent's reason names the step, its target and the Win32 error. */
	snprintf(h->failure, sizeof(h->failure), "%s %s: %s", step_names[h->step], state,
		 reason[0] ? reason : "no reason given");
	printf("  %-10s %-24s %s: %s\n", h->host_id, step_names[h->step], state,
	       reason[0] ? reason : "no reason given");
}

/* Runs the plans of hosts [from, to) together until each is done or failed. */
static void run_plans(struct repair *r, size_t from, size_t to)
{
	int64_t deadline = util_now_ms() + r->timeout_ms;
	for (;;) {
		size_t busy = 0;
		for (size_t i = from; i < to; i++) {
			struct host_plan *h = &r->hosts[i];
			if (h->failed || h->step == STEP_DONE)
				continue;
			busy++;
			if (h->command_id[0])
				check_step(r, h, deadline);
			else if (submit_step(r, h) < 0)
				printf("  %-10s FAILED: %s\n", h->host_id, h->failure);
		}
		if (busy == 0)
			return;
		uv_sleep(POLL_MS);
	}
}

/* ---- setup ---- */

static int read_password(struct repair *r, const char *file)
{
	char buf[PASSWORD_MAX + 2];
	FILE *in = file ? fopen(file, "r") : fopen("/dev/tty", "r+");
	if (!in)
		return ctl_fail("repair", "cannot read the password from %s",
				file ? file : "the terminal (give --password-file)");
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

/* The host's sealing key, checked against its certificate and our CA. */
static void load_sealing(struct repair *r, struct host_plan *h)
{
	uint8_t *pub = NULL, *sig = NULL, *der = NULL;
	size_t pub_len, sig_len, der_len;
	char err[512];
	if (store_host_sealing(r->st, h->host_id, &pub, &pub_len, &sig, &sig_len, &der, &der_len,
			       err, sizeof(err)) < 0) {
		snprintf(h->failure, sizeof(h->failure), "%s", err);
		goto out;
	}
	const uint8_t *p = der;
	X509 *cert = d2i_X509(NULL, &p, (long)der_len);
	if (!cert || pub_len != SEAL_KEY_LEN ||
	    seal_key_verify(r->verifier, cert, h->host_id, pub, sig, sig_len, err, sizeof(err)) <
		    0) {
		snprintf(h->failure, sizeof(h->failure), "sealing key refused: %s",
			 cert ? err : "the stored agent certificate does not parse");
	} else {
		memcpy(h->pub, pub, SEAL_KEY_LEN);
		h->sealing_ok = 1;
	}
	X509_free(cert);
out:
	free(pub);
	free(sig);
	free(der);
}

static void status_cb(const struct store_row *row, void *arg)
{
	const char *status = ctl_value(row, "status");
	snprintf(arg, 32, "%s", status ? status : "");
}

static size_t failures(const struct repair *r, size_t from, size_t to)
{
	size_t n = 0;
	for (size_t i = from; i < to; i++)
		n += r->hosts[i].failed;
	return n;
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
		{"ca", required_argument, NULL, 'A'},
		{"crl", required_argument, NULL, 'R'},
		{"timeout", required_argument, NULL, 't'},
		{"store", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	const char *host = NULL, *status = NULL, *wave = NULL, *password_file = NULL;
	const char *cert_file = NULL, *key_file = NULL, *ca = NULL, *crl = NULL;
	const char *path = "collector.db";
	long canary = 0;
	double max_rate = 0;
	int dry_run = 0, c;
	struct repair r = {.timeout_ms = 300000};
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
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
			dry_run = 1;
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
		case 'A':
			ca = optarg;
			break;
		case 'R':
			crl = optarg;
			break;
		case 'd':
			path = optarg;
			break;
		case 'c':
			canary = strtol(optarg, &end, 10);
			if (*end || canary < 1)
				return ctl_usage_error("repair", "repair",
						       "--canary '%s' is not a positive number", optarg);
			break;
		case 'm':
			max_rate = strtod(optarg, &end);
			if (*end || max_rate < 0 || max_rate > 1)
				return ctl_usage_error("repair", "repair",
						       "--max-failure-rate '%s' is not between 0 and 1",
						       optarg);
			break;
		case 't':
			r.timeout_ms = strtol(optarg, &end, 10) * 1000;
			if (*end == 'm') {
				r.timeout_ms *= 60;
				end++;
			} else if (*end == 's') {
				end++;
			}
			if (*end || r.timeout_ms <= 0)
				return ctl_usage_error("repair", "repair",
						       "--timeout '%s' is not like 90s or 5m", optarg);
			break;
		case 'h':
			fputs(repair_usage, stdout);
			return CTL_OK;
		default:
			return ctl_usage_error("repair", "repair", "unknown option");
		}
	}
	if (optind != argc)
		return ctl_usage_error("repair", "repair", "unexpected argument '%s'", argv[optind]);
	if (!!host + !!status + !!wave != 1)
		return ctl_usage_error("repair", "repair", "choose hosts by one of --host, --status "
					     "and --wave");
	if (!r.service_pack && !r.account)
		return ctl_usage_error("repair", "repair", "--account DOMAIN\\NAME is required");
	if (!dry_run && (!cert_file || !key_file || !ca))
		return ctl_usage_error("repair", "repair",
				       "commands are signed: give --operator-cert, --operator-key "
				       "and --ca");
	char err[512];
	int rc = CTL_FAILED;
	if (store_open_reader(&r.st, path, err, sizeof(err)) < 0)
		return ctl_fail("repair", "%s", err);
	struct pick pick = {&r, 0};
	if (host) {
		pick_cb(&(struct store_row){1, (const char *[]){"host_id"},
					    (const char *[]){host}, NULL},
			&pick);
	} else if (store_view(r.st, STORE_HOSTS, NULL, status, wave, pick_cb, &pick, err,
			      sizeof(err)) < 0) {
		ctl_fail("repair", "%s", err);
		goto out;
	}
	if (pick.failed || r.n == 0) {
		ctl_fail("repair", "%s", pick.failed ? "out of memory" : "no host matches");
		goto out;
	}
	for (size_t i = 0; i < r.n; i++)
		store_view(r.st, STORE_HOST_SERVICES, r.hosts[i].host_id, NULL, NULL, services_cb,
			   &r.hosts[i], err, sizeof(err));
	if (dry_run) {
		for (size_t i = 0; i < r.n; i++) {
			struct host_plan *h = &r.hosts[i];
			printf("%s:", h->host_id);
			if (r.service_pack) {
				printf(" reapply-service-pack, rescan\n");
				continue;
			}
			printf(" verify-credentials %s; grant-rights SeServiceLogonRight, "
			       "SeTcbPrivilege, SeRestorePrivilege; set-service-credentials",
			       r.account);
			for (size_t k = 0; k < h->n_services; k++)
				printf("%s %s", k ? "," : "", h->services[k]);
			printf("; restart-services; rescan\n");
		}
		printf("dry run: %zu host%s, nothing sent\n", r.n, r.n == 1 ? "" : "s");
		rc = CTL_OK;
		goto out;
	}
	if (ctl_load_operator("repair", cert_file, key_file, &r.cert, &r.key) != CTL_OK)
		goto out;
	r.verifier = sign_verifier_new(ca, crl, err, sizeof(err));
	if (!r.verifier) {
		ctl_fail("repair", "%s", err);
		goto out;
	}
	if (!r.service_pack && read_password(&r, password_file) != CTL_OK)
		goto out;
	for (size_t i = 0; i < r.n; i++) {
		struct host_plan *h = &r.hosts[i];
		h->step = r.service_pack ? STEP_SERVICE_PACK : STEP_VERIFY;
		if (r.service_pack)
			continue;
		load_sealing(&r, h);
		if (!h->sealing_ok) {
			h->failed = 1;
			printf("  %-10s FAILED: %s\n", h->host_id, h->failure);
		} else if (h->n_services == 0) {
			h->failed = 1;
			snprintf(h->failure, sizeof(h->failure), "no Exchange service reported");
			printf("  %-10s FAILED: %s\n", h->host_id, h->failure);
		}
	}
	size_t first = canary > 0 && (size_t)canary < r.n ? (size_t)canary : r.n;
	printf("repairing %zu host%s%s\n", first, first == 1 ? "" : "s",
	       first < r.n ? " (canary)" : "");
	run_plans(&r, 0, first);
	if (first < r.n) {
		double rate = (double)failures(&r, 0, first) / (double)first;
		if (rate > max_rate) {
			printf("canary: %zu of %zu failed (%.0f%%), above --max-failure-rate %.0f%%: "
			       "the other %zu hosts were not touched\n",
			       failures(&r, 0, first), first, rate * 100, max_rate * 100, r.n - first);
			goto summary;
		}
		printf("canary: %zu of %zu failed; repairing the other %zu\n",
		       failures(&r, 0, first), first, r.n - first);
		run_plans(&r, first, r.n);
	}
summary:;
	size_t done = 0, failed = failures(&r, 0, r.n);
	for (size_t i = 0; i < r.n; i++)
		done += r.hosts[i].step == STEP_DONE;
	printf("\n%zu host%s: %zu repaired, %zu failed, %zu not touched\n", r.n,
	       r.n == 1 ? "" : "s", done, failed, r.n - done - failed);
	for (size_t i = 0; i < r.n; i++)
		if (r.hosts[i].failed)
			printf("  %s: %s\n", r.hosts[i].host_id, r.hosts[i].failure);
	if (!r.service_pack) {
		/* Hosts whose POP3/IMAP users still fail need the service pack. */
		size_t sp = 0;
		for (size_t i = 0; i < r.n; i++) {
			char host_status[32] = "";
			store_view(r.st, STORE_HOST, r.hosts[i].host_id, NULL, NULL, status_cb,
				   host_status, err, sizeof(err));
			if (strcmp(host_status, "NEEDS_SP_REINSTALL") == 0) {
				printf("  %s: POP3/IMAP still fail: run exfleetctl repair "
				       "--service-pack --host %s\n",
				       r.hosts[i].host_id, r.hosts[i].host_id);
				sp++;
			}
		}
		if (sp == 0)
			printf("If POP3/IMAP keep failing on a repaired host, it becomes "
			       "NEEDS_SP_REINSTALL: then run exfleetctl repair --service-pack for "
			       "it.\n");
	}
	rc = failed || done < r.n ? CTL_FAILED : CTL_OK;
out:
	OPENSSL_cleanse(r.password, sizeof(r.password));
	sign_verifier_free(r.verifier);
	X509_free(r.cert);
	EVP_PKEY_free(r.key);
	free(r.hosts);
	if (r.st)
		store_close_reader(r.st);
	return rc;
}
