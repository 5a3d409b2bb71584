/* exfleetctl pki: the deployment's CA. One function per subcommand; the work
 * itself is in common/pki.c. */
#include "ctl.h"

#include "pki.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define POSITIONAL_MAX 2

static const char pki_usage[] =
    "usage: exfleetctl pki <subcommand> [arguments] --dir DIR\n"
    "\n"
    "The deployment's private CA, kept in DIR.\n"
    "\n"
    "  init --dir DIR [--algo ecdsa|ed25519] [--days N]\n"
    "      Create the CA (default ECDSA P-256, valid 3650 days): DIR/ca.crt,\n"
    "      DIR/ca.key, DIR/crl.pem, DIR/index.txt.\n"
    "  issue agent HOST_ID --dir DIR [--days N] [--algo A] [--force]\n"
    "  issue collector DNS_NAME --dir DIR [--days N] [--algo A] [--force]\n"
    "  issue operator NAME --role operator|viewer --dir DIR [--days N] [--algo A]\n"
    "        [--force]\n"
    "      Issue a certificate and key (default valid 825 days):\n"
    "      DIR/<role>/<name>.crt and DIR/<role>/<name>.key. Agent keys are\n"
    "      Ed25519 (a collector holds one per session: they are the smaller),\n"
    "      the others' follow the CA; --algo ecdsa|ed25519 chooses. --force\n"
    "      issues one even though the name holds a valid certificate, which\n"
    "      stays valid.\n"
    "  revoke SERIAL_OR_NAME --dir DIR\n"
    "      Revoke one certificate, or every certificate of a name, and rewrite\n"
    "      DIR/crl.pem; copy it to the collectors.\n"
    "  crl --dir DIR [--days N]\n"
    "      Re-sign DIR/crl.pem, valid N days (default 365). Once a CRL's next\n"
    "      update passes, collectors refuse every agent: refresh it before then.\n"
    "  list --dir DIR [--json | --csv]\n"
    "      Issued certificates: serial, role, name, expiry, status.\n"
    "\n"
    "Names are 1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -.\n"
    "Exit status: 0 done, 1 the operation failed, 2 bad usage.\n";

/* Options of every subcommand; each accepts only those in its mask. */
enum {
	OPT_DIR = 1 << 0,
	OPT_DAYS = 1 << 1,
	OPT_ALGO = 1 << 2,
	OPT_FORCE = 1 << 3,
	OPT_ROLE = 1 << 4,
	OPT_JSON = 1 << 5,
	OPT_CSV = 1 << 6,
};

struct pki_args {
	const char *what; /* "pki issue", for messages */
	const char *dir;
	int days;
	const char *algo;
	const char *role;
	int force;
	int json, csv;
	int help;
	char *pos[POSITIONAL_MAX];
	int npos;
};

static int parse_days(const char *text, int *days)
{
	char *end;
	errno = 0;
	long v = strtol(text, &end, 10);
	if (errno || end == text || *end || v < 1 || v > PKI_DAYS_MAX)
		return -1;
	*days = (int)v;
	return 0;
}

/* Parses argv (argv[0] is the subcommand) into a; returns CTL_OK or the
 * exit code of a usage error, already reported. */
static int parse_args(int argc, char **argv, unsigned allowed, int npos_min, int npos_max,
                      const char *expected, struct pki_args *a)
{
	static const struct option options[] = {
	    {"dir", required_argument, NULL, OPT_DIR},
	    {"days", required_argument, NULL, OPT_DAYS},
	    {"algo", required_argument, NULL, OPT_ALGO},
	    {"force", no_argument, NULL, OPT_FORCE},
	    {"role", required_argument, NULL, OPT_ROLE},
	    {"json", no_argument, NULL, OPT_JSON},
	    {"csv", no_argument, NULL, OPT_CSV},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	/* GNU getopt moves options after positional arguments to the front, so
	 * "issue agent HOST --dir DIR" parses; ':' first: we report errors. */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
		if (c == 'h') {
			a->help = 1;
			return CTL_OK;
		}
		if (c == '?')
			return ctl_usage_error(a->what, "pki", "unknown option '%s'",
			                       argv[optind - 1]);
		if (c == ':')
			return ctl_usage_error(a->what, "pki", "%s needs a value",
			                       argv[optind - 1]);
		if (!((unsigned)c & allowed))
			return ctl_usage_error(a->what, "pki", "%s does not apply here",
			                       argv[optind - 1]);
		switch (c) {
		case OPT_DIR:
			a->dir = optarg;
			break;
		case OPT_DAYS:
			if (parse_days(optarg, &a->days) < 0)
				return ctl_usage_error(a->what, "pki",
				                       "--days '%s': give a whole number 1 to %d",
				                       optarg, PKI_DAYS_MAX);
			break;
		case OPT_ALGO:
			a->algo = optarg;
			break;
		case OPT_FORCE:
			a->force = 1;
			break;
		case OPT_ROLE:
			a->role = optarg;
			break;
		case OPT_JSON:
			a->json = 1;
			break;
		case OPT_CSV:
			a->csv = 1;
			break;
		}
	}
	a->npos = argc - optind;
	if (a->npos < npos_min)
		return ctl_usage_error(a->what, "pki", "missing argument: give %s", expected);
	if (a->npos > npos_max)
		return ctl_usage_error(a->what, "pki", "unexpected argument '%s'",
		                       argv[optind + npos_max]);
	for (int i = 0; i < a->npos; i++)
		a->pos[i] = argv[optind + i];
	if ((allowed & OPT_DIR) && !a->dir)
		return ctl_usage_error(a->what, "pki", "--dir DIR is required");
	return CTL_OK;
}

/* --algo's value; the caller has checked that one was given. */
static int parse_algo(const struct pki_args *a, enum pki_algo *algo)
{
	if (strcmp(a->algo, "ed25519") == 0)
		*algo = PKI_ALGO_ED25519;
	else if (strcmp(a->algo, "ecdsa") == 0)
		*algo = PKI_ALGO_ECDSA_P256;
	else
		return ctl_usage_error(a->what, "pki", "--algo '%s': use ecdsa or ed25519",
		                       a->algo);
	return CTL_OK;
}

static int pki_init_cmd(int argc, char **argv)
{
	struct pki_args a = {.what = "pki init"};
	enum pki_algo algo = PKI_ALGO_ECDSA_P256;
	char err[512];
	int rc = parse_args(argc, argv, OPT_DIR | OPT_DAYS | OPT_ALGO, 0, 0, "", &a);
	if (rc != CTL_OK || a.help)
		goto out;
	if (a.algo && (rc = parse_algo(&a, &algo)) != CTL_OK)
		return rc;
	if (pki_init(a.dir, algo, a.days, err, sizeof(err)) < 0)
		return ctl_fail(a.what, "%s", err);
	printf("created a CA (%s, valid %d days) in %s:\n"
	       "  %s/ca.crt     CA certificate: install on every agent and collector\n"
	       "  %s/ca.key     CA private key (mode 0600): keep it here, copy it nowhere\n"
	       "  %s/crl.pem    revocation list, valid %d days: refresh with exfleetctl pki crl\n"
	       "  %s/index.txt  issued certificates\n",
	       algo == PKI_ALGO_ED25519 ? "Ed25519" : "ECDSA P-256",
	       a.days ? a.days : PKI_CA_DAYS_DEFAULT, a.dir, a.dir, a.dir, a.dir,
	       PKI_CRL_DAYS_DEFAULT, a.dir);
out:
	if (a.help)
		fputs(pki_usage, stdout);
	return rc;
}

struct earlier {
	const struct pki_entry *issued;
	const char *dir;
	int64_t now;
};

static void earlier_cb(const struct pki_entry *e, void *arg)
{
	const struct earlier *ea = arg;
	char until[32];
	if (e->role != ea->issued->role || strcmp(e->name, ea->issued->name) != 0 ||
	    strcmp(e->serial, ea->issued->serial) == 0 || e->revoked || e->not_after <= ea->now)
		return;
	util_format_time(e->not_after * 1000, until, sizeof(until));
	printf("note: the earlier certificate %s stays valid until %s;\n"
	       "      revoke it with: exfleetctl pki revoke %s --dir %s\n",
	       e->serial, until, e->serial, ea->dir);
}

static int pki_issue_cmd(int argc, char **argv)
{
	struct pki_args a = {.what = "pki issue"};
	struct pki_issue_opts o = {0};
	struct pki_entry issued;
	char err[512], crt[4096], key[4096], until[32];
	int rc = parse_args(argc, argv, OPT_DIR | OPT_DAYS | OPT_FORCE | OPT_ROLE | OPT_ALGO, 2, 2,
	                    "agent|collector|operator NAME", &a);
	if (rc != CTL_OK || a.help)
		goto out;
	if (a.algo && (rc = parse_algo(&a, &o.algo)) != CTL_OK)
		return rc;
	o.algo_set = a.algo != NULL;
	const char *kind = a.pos[0];
	if (strcmp(kind, "agent") == 0 || strcmp(kind, "collector") == 0) {
		if (a.role)
			return ctl_usage_error(a.what, "pki", "--role applies to operators only");
		o.role = strcmp(kind, "agent") == 0 ? PKI_ROLE_AGENT : PKI_ROLE_COLLECTOR;
	} else if (strcmp(kind, "operator") == 0) {
		/* No default: a typo must not hand out the operator role. */
		if (!a.role)
			return ctl_usage_error(a.what, "pki", "--role operator|viewer is required");
		if (strcmp(a.role, "operator") != 0 && strcmp(a.role, "viewer") != 0)
			return ctl_usage_error(a.what, "pki", "--role '%s': use operator or viewer",
			                       a.role);
		o.role = (enum pki_role)pki_role_parse(a.role);
	} else {
		return ctl_usage_error(
		    a.what, "pki", "'%s': issue agent, collector or operator (with --role)", kind);
	}
	o.name = a.pos[1];
	o.days = a.days;
	o.force = a.force;
	if (pki_issue(a.dir, &o, &issued, err, sizeof(err)) < 0)
		return ctl_fail(a.what, "%s", err);
	if (pki_cert_path(a.dir, o.role, o.name, crt, sizeof(crt), key, sizeof(key)) < 0)
		return ctl_fail(a.what, "%s: path too long", a.dir);
	util_format_time(issued.not_after * 1000, until, sizeof(until));
	printf("issued a certificate for %s %s:\n"
	       "  serial   %s\n"
	       "  expires  %s\n"
	       "  cert     %s\n"
	       "  key      %s (mode 0600)\n",
	       pki_role_name(o.role), o.name, issued.serial, until, crt, key);
	if (a.force) {
		struct earlier ea = {&issued, a.dir, util_now_ms() / 1000};
		if (pki_list(a.dir, earlier_cb, &ea, err, sizeof(err)) < 0)
			return ctl_fail(a.what, "%s", err);
	}
out:
	if (a.help)
		fputs(pki_usage, stdout);
	return rc;
}

static void revoked_cb(const struct pki_entry *e, void *arg)
{
	(void)arg;
	printf("revoked %s (%s %s)\n", e->serial, pki_role_name(e->role), e->name);
}

static int pki_revoke_cmd(int argc, char **argv)
{
	struct pki_args a = {.what = "pki revoke"};
	char err[512];
	int rc = parse_args(argc, argv, OPT_DIR, 1, 1, "SERIAL_OR_NAME", &a);
	if (rc != CTL_OK || a.help)
		goto out;
	if (pki_revoke(a.dir, a.pos[0], revoked_cb, NULL, err, sizeof(err)) < 0)
		return ctl_fail(a.what, "%s", err);
	printf("wrote %s/crl.pem; copy it to the collectors\n", a.dir);
out:
	if (a.help)
		fputs(pki_usage, stdout);
	return rc;
}

static int pki_crl_cmd(int argc, char **argv)
{
	struct pki_args a = {.what = "pki crl"};
	char err[512], until[32];
	int rc = parse_args(argc, argv, OPT_DIR | OPT_DAYS, 0, 0, "", &a);
	if (rc != CTL_OK || a.help)
		goto out;
	int days = a.days ? a.days : PKI_CRL_DAYS_DEFAULT;
	if (pki_crl_refresh(a.dir, days, err, sizeof(err)) < 0)
		return ctl_fail(a.what, "%s", err);
	util_format_time(util_now_ms() + (int64_t)days * 86400 * 1000, until, sizeof(until));
	printf("wrote %s/crl.pem, next update %s; copy it to the collectors\n", a.dir, until);
out:
	if (a.help)
		fputs(pki_usage, stdout);
	return rc;
}

struct listing {
	struct pki_entry *entries;
	size_t count, cap;
	int failed;
};

static void listing_cb(const struct pki_entry *e, void *arg)
{
	struct listing *l = arg;
	if (l->failed)
		return;
	if (l->count == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct pki_entry *grown = realloc(l->entries, cap * sizeof(*grown));
		if (!grown) {
			l->failed = 1;
			return;
		}
		l->entries = grown;
		l->cap = cap;
	}
	l->entries[l->count++] = *e;
}

static int pki_list_cmd(int argc, char **argv)
{
	struct pki_args a = {.what = "pki list"};
	struct listing l = {0};
	char err[512];
	int name_width = 4;
	int rc = parse_args(argc, argv, OPT_DIR | OPT_JSON | OPT_CSV, 0, 0, "", &a);
	if (rc != CTL_OK || a.help)
		goto out;
	if (a.json && a.csv) {
		rc = ctl_usage_error(a.what, "pki", "give --json or --csv, not both");
		goto out;
	}
	if (pki_list(a.dir, listing_cb, &l, err, sizeof(err)) < 0) {
		rc = ctl_fail(a.what, "%s", err);
		goto out;
	}
	if (l.failed) {
		rc = ctl_fail(a.what, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < l.count; i++) {
		int w = (int)strlen(l.entries[i].name);
		name_width = w > name_width ? w : name_width;
	}
	int64_t now = util_now_ms() / 1000;
	json_t *all = a.json ? json_array() : NULL;
	if (a.csv)
		printf("serial,role,name,expires,status,revoked_at\n");
	else if (!a.json)
		printf("%-32s  %-9s  %-*s  %-20s  %s\n", "SERIAL", "ROLE", name_width, "NAME",
		       "EXPIRES", "STATUS");
	for (size_t i = 0; i < l.count; i++) {
		const struct pki_entry *e = &l.entries[i];
		char until[32], when[32] = "", status[48];
		const char *state = e->revoked ? "revoked" : e->not_after <= now ? "expired" : "valid";
		util_format_time(e->not_after * 1000, until, sizeof(until));
		if (e->revoked)
			util_format_time(e->revoked_at * 1000, when, sizeof(when));
		snprintf(status, sizeof(status), "%s%s%s", state, e->revoked ? " " : "", when);
		/* Names are plain (pki_name_valid): no CSV quoting needed. */
		if (a.csv)
			printf("%s,%s,%s,%s,%s,%s\n", e->serial, pki_role_name(e->role), e->name,
			       until, state, when);
		else if (a.json)
			json_array_append_new(
				all, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?}", "serial", e->serial,
					       "role", pki_role_name(e->role), "name", e->name,
					       "expires", until, "status", state, "revoked_at",
					       e->revoked ? when : NULL));
		else
			printf("%-32s  %-9s  %-*s  %-20s  %s\n", e->serial, pki_role_name(e->role),
			       name_width, e->name, until, status);
	}
	if (a.json) {
		if (!all || json_dumpf(all, stdout, JSON_INDENT(2)) < 0) {
			json_decref(all);
			rc = ctl_fail(a.what, "out of memory");
			goto out;
		}
		putchar('\n');
		json_decref(all);
	}
out:
	if (a.help)
		fputs(pki_usage, stdout);
	free(l.entries);
	return rc;
}

static const struct ctl_command pki_commands[] = {
    {"init", pki_init_cmd, "create the CA"},
    {"issue", pki_issue_cmd, "issue a certificate and key"},
    {"revoke", pki_revoke_cmd, "revoke certificates and rewrite the CRL"},
    {"crl", pki_crl_cmd, "re-sign the CRL"},
    {"list", pki_list_cmd, "list issued certificates"},
};

int ctl_pki(int argc, char **argv)
{
	if (ctl_wants_help(argc, argv)) {
		fputs(pki_usage, stdout);
		return CTL_OK;
	}
	if (argc < 2)
		return ctl_usage_error("pki", "pki", "missing subcommand");
	const struct ctl_command *sub =
	    ctl_find(pki_commands, sizeof(pki_commands) / sizeof(pki_commands[0]), argv[1]);
	if (!sub)
		return ctl_usage_error("pki", "pki", "unknown subcommand '%s'", argv[1]);
	return sub->fn(argc - 1, argv + 1);
}
