/* exfleet-sim: creates simulated Exchange 5.5 fleets and applies to a host
 * what happens in the field (KB Q255269). The host file format and the
 * behaviours are described in sim_host.h.
 *
 * Exit status: 0 done, 1 failed, 2 usage error. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "log.h"
#include "pki.h"
#include "probe.h"
#include "sim_host.h"
#include "util.h"

#define EXIT_USAGE 2
#define HOSTS_MAX 99999
#define WAVES_MAX 520
#define LOGONS_MAX 1000000
#define PASSWORD_MAX 127
#define PROGRESS_EVERY 100

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *usage;
	const char *help;
};

static const struct command *current;

static int usage_error(const char *fmt, ...) LOG_PRINTF(1, 2);
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "exfleet-sim %s: ", current->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: exfleet-sim %s\n(see exfleet-sim %s --help)\n", current->usage,
		current->name);
	return EXIT_USAGE;
}

static int failed(const char *fmt, ...) LOG_PRINTF(1, 2);
static int failed(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "exfleet-sim %s: ", current->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_FAILURE;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Options shared by every subcommand; -h and --help print the help. */
#define COMMON_OPTS {"help", no_argument, NULL, 'h'}

/* Runs getopt_long; returns the option, -1 at the end, or a negative exit
 * status after printing help (EXIT_SUCCESS) or a usage error. */
static int next_opt(int argc, char **argv, const struct option *opts, int *status)
{
	int c = getopt_long(argc, argv, ":h", opts, NULL);
	*status = -1;
	if (c == 'h') {
		printf("usage: exfleet-sim %s\n\n%s", current->usage, current->help);
		*status = EXIT_SUCCESS;
	} else if (c == '?') {
		*status = usage_error("unknown option '%s'", argv[optind - 1]);
	} else if (c == ':') {
		*status = usage_error("option '%s' needs a value", argv[optind - 1]);
	}
	return c;
}

/* The one HOSTFILE operand of dcpromo, logon, reboot and show. */
static int host_operand(int argc, char **argv, const char **path)
{
	if (optind >= argc)
		return usage_error("missing HOSTFILE");
	if (optind + 1 < argc)
		return usage_error("unexpected argument '%s'", argv[optind + 1]);
	*path = argv[optind];
	return 0;
}

/* ---- showing a host ---- */

static void print_time(FILE *out, int64_t ms)
{
	char buf[32];
	util_format_time(ms, buf, sizeof(buf));
	fputs(buf, out);
}

static const char *status_name(enum sim_account_status st)
{
	switch (st) {
	case SIM_ACCOUNT_BUILTIN: return "builtin";
	case SIM_ACCOUNT_EXISTS: return "exists";
	case SIM_ACCOUNT_MISSING: return "MISSING";
	}
	return "?";
}

static void print_services(FILE *out, const struct sim_host *h)
{
	fprintf(out, "services:\n  %-14s %-13s %5s %-8s %-20s %s\n", "NAME", "STATE", "EXIT",
		"START", "ACCOUNT", "ACCOUNT STATUS");
	for (size_t i = 0; i < h->n_services; i++) {
		const struct sim_service *s = &h->services[i];
		fprintf(out, "  %-14s %-13s %5u %-8s %-20s %s\n", s->name, sim_state_name(s->state),
			s->win32_exit_code, sim_start_type_name(s->start_type), s->logon_account,
			status_name(sim_host_resolve(h, s->logon_account, NULL)));
	}
}

static void print_rights(FILE *out, const char *label, const struct sim_account *a)
{
	fprintf(out, "  %-20s ", label);
	if (a->rights.n == 0)
		fputs("(none)", out);
	for (size_t i = 0; i < a->rights.n; i++)
		fprintf(out, "%s%s", i ? ", " : "", a->rights.v[i]);
	fputc('\n', out);
}

static void print_event(FILE *out, const struct sim_event *e)
{
	fprintf(out, "  #%-6u ", e->record_number);
	print_time(out, e->time_ms);
	fprintf(out, " %-11s %-25s %5u %-11s %s\n", e->log, e->source, e->event_id,
		sim_event_type_name(e->type), e->message);
}

static void print_host(FILE *out, const char *path, const struct sim_host *h)
{
	char label[64];
	fprintf(out, "%s (%s)\n  role:     %s", h->computer_name, path, sim_role_name(h->role));
	if (h->role_changed_at_ms) {
		fputs(" since ", out);
		print_time(out, h->role_changed_at_ms);
	}
	fprintf(out, "\n  domain:   %s\n", h->domain);
	if (sim_host_is_dc(h))
		fputs("  SAM:      removed (domain controller)\n", out);
	else
		fprintf(out, "  SAM:      present, local accounts: %zu\n", h->n_local_accounts);
	fprintf(out, "  exchange: %s, service pack %u, POP3/IMAP4 %s\n", h->exchange_version,
		h->exchange_service_pack,
		h->pop3_imap_broken ? "BROKEN until the service pack is reapplied" : "working");
	print_services(out, h);
	fputs("rights:\n", out);
	for (size_t i = 0; i < h->n_local_accounts; i++) {
		snprintf(label, sizeof(label), ".\\%s", h->local_accounts[i].name);
		print_rights(out, label, &h->local_accounts[i]);
	}
	for (size_t i = 0; i < h->n_domain_accounts; i++) {
		snprintf(label, sizeof(label), "%s\\%s", h->domain, h->domain_accounts[i].name);
		print_rights(out, label, &h->domain_accounts[i]);
	}
	size_t first = h->n_events > 10 ? h->n_events - 10 : 0;
	fprintf(out, "events (last %zu of %zu kept, next record %u):\n", h->n_events - first,
		h->n_events, h->next_record_number);
	for (size_t i = first; i < h->n_events; i++)
		print_event(out, &h->events[i]);
}

static int cmd_show(int argc, char **argv)
{
	static const struct option opts[] = {COMMON_OPTS, {0}};
	const char *path;
	char err[512];
	struct sim_host *h;
	int c, status;
	while ((c = next_opt(argc, argv, opts, &status)) != -1)
		if (status >= 0)
			return status;
	if ((status = host_operand(argc, argv, &path)) != 0)
		return status;
	if (sim_host_load_file(path, &h, err, sizeof(err)) < 0)
		return failed("%s", err);
	print_host(stdout, path, h);
	sim_host_free(h);
	return EXIT_SUCCESS;
}

/* ---- dcpromo, reboot, logon ---- */

struct verb {
	int backup;
	uint64_t pop3, imap4;
	struct sim_logon_counts pop3_counts, imap4_counts;
	uint32_t first_record;  /* the first record this verb logged */
	int result;
};

/* After a change: the services and the events it logged. */
static int report_change(const char *path, uint32_t first_record)
{
	char err[512];
	struct sim_host *h;
	if (sim_host_load_file(path, &h, err, sizeof(err)) < 0)
		return failed("%s", err);
	print_services(stdout, h);
	size_t logged = 0;
	for (size_t i = 0; i < h->n_events; i++)
		logged += h->events[i].record_number >= first_record;
	printf("events logged: %zu%s\n", logged, logged > 20 ? " (showing the last 20)" : "");
	size_t shown = 0;
	for (size_t i = 0; i < h->n_events; i++)
		if (h->events[i].record_number >= first_record && logged - shown++ <= 20)
			print_event(stdout, &h->events[i]);
	sim_host_free(h);
	return EXIT_SUCCESS;
}

static int dcpromo_cb(struct sim_host *h, void *arg)
{
	struct verb *v = arg;
	v->first_record = h->next_record_number;
	v->result = sim_host_dcpromo(h, v->backup);
	return v->result < 0 ? 1 : 0;
}

static int cmd_dcpromo(int argc, char **argv)
{
	static const struct option opts[] = {COMMON_OPTS, {"backup", no_argument, NULL, 'b'}, {0}};
	struct verb v = {0};
	const char *path;
	char err[512];
	int c, status;
	while ((c = next_opt(argc, argv, opts, &status)) != -1) {
		if (status >= 0)
			return status;
		if (c == 'b')
			v.backup = 1;
	}
	if ((status = host_operand(argc, argv, &path)) != 0)
		return status;
	if (sim_host_edit(path, dcpromo_cb, &v, err, sizeof(err)) < 0)
		return failed("%s", err);
	if (v.result == UV_EALREADY)
		return failed("%s: already a domain controller; dcpromo would demote it, which this "
			      "simulator does not model", path);
	printf("%s: promoted to %s domain controller: SAM removed, security policy replaced "
	       "(rights granted on this server are gone), POP3/IMAP4 broken, rebooted\n",
	       path, v.backup ? "a backup" : "the primary");
	return report_change(path, v.first_record);
}

static int reboot_cb(struct sim_host *h, void *arg)
{
	struct verb *v = arg;
	v->first_record = h->next_record_number;
	sim_host_reboot(h);
	return 0;
}

static int cmd_reboot(int argc, char **argv)
{
	static const struct option opts[] = {COMMON_OPTS, {0}};
	struct verb v = {0};
	const char *path;
	char err[512];
	int c, status;
	while ((c = next_opt(argc, argv, opts, &status)) != -1)
		if (status >= 0)
			return status;
	if ((status = host_operand(argc, argv, &path)) != 0)
		return status;
	if (sim_host_edit(path, reboot_cb, &v, err, sizeof(err)) < 0)
		return failed("%s", err);
	printf("%s: rebooted\n", path);
	return report_change(path, v.first_record);
}

static int logon_cb(struct sim_host *h, void *arg)
{
	struct verb *v = arg;
	sim_host_logon(h, v->pop3, v->imap4, &v->pop3_counts, &v->imap4_counts);
	return v->pop3_counts.failed + v->imap4_counts.failed ? 0 : 1;
}

static void print_logons(const char *protocol, const char *source, unsigned event_id,
			 uint64_t n, const struct sim_logon_counts *c)
{
	printf("  %-5s %llu logons: %llu succeeded, %llu failed (%s %u logged each), %llu refused "
	       "(Information Store not running)\n",
	       protocol, (unsigned long long)n, (unsigned long long)c->ok,
	       (unsigned long long)c->failed, source, event_id,
	       (unsigned long long)c->refused);
}

static int cmd_logon(int argc, char **argv)
{
	static const struct option opts[] = {COMMON_OPTS,
					     {"pop3", required_argument, NULL, 'p'},
					     {"imap", required_argument, NULL, 'i'},
					     {0}};
	struct verb v = {0};
	const char *path;
	char err[512];
	int c, status;
	while ((c = next_opt(argc, argv, opts, &status)) != -1) {
		if (status >= 0)
			return status;
		uint64_t *dst = c == 'p' ? &v.pop3 : &v.imap4;
		if (parse_u64(optarg, 0, LOGONS_MAX, dst) < 0)
			return usage_error("%s: '%s' is not a count in 0..%d", argv[optind - 1],
					   optarg, LOGONS_MAX);
	}
	if ((status = host_operand(argc, argv, &path)) != 0)
		return status;
	if (v.pop3 + v.imap4 == 0)
		return usage_error("give --pop3 N and/or --imap M");
	if (sim_host_edit(path, logon_cb, &v, err, sizeof(err)) < 0)
		return failed("%s", err);
	printf("%s: client logons\n", path);
	print_logons("POP3", SIM_SOURCE_POP3, SIM_EVENT_POP3_AUTH, v.pop3, &v.pop3_counts);
	print_logons("IMAP4", SIM_SOURCE_IMAP4, SIM_EVENT_IMAP4_AUTH, v.imap4, &v.imap4_counts);
	return EXIT_SUCCESS;
}

/* ---- create ---- */

struct create_opts {
	const char *dir;
	uint64_t hosts, waves, seed;
	double local_share;
	const char *collector, *collector_name, *domain, *password_file;
};

static int write_text(const char *path, const char *text, int mode)
{
	char err[512];
	if (util_write_file_atomic(path, text, strlen(text), mode, err, sizeof(err)) < 0)
		return failed("%s", err);
	return 0;
}

/* The Exchange account's password: the first line of --password-file, or
 * one made from the seed and left in DIR/exsvc.password (0600) for the
 * operator who will type it into exfleetctl. Host files get hashes only. */
static int service_password(const struct create_opts *o, char *out, size_t len, int *generated)
{
	char err[512], path[4096];
	*generated = 0;
	if (o->password_file) {
		char *data;
		size_t n;
		if (util_read_file(o->password_file, 4096, &data, &n, err, sizeof(err)) < 0)
			return failed("%s", err);
		data[strcspn(data, "\r\n")] = '\0';
		int ok = data[0] && strlen(data) < len;
		if (ok)
			snprintf(out, len, "%s", data);
		OPENSSL_cleanse(data, n);
		free(data);
		if (!ok)
			return failed("%s: the first line must hold a password of 1..%zu characters",
				      o->password_file, len - 1);
		return 0;
	}
	struct sim_rng r;
	sim_rng_seed(&r, o->seed, 0);
	static const char alphabet[] = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
	for (size_t i = 0; i < 16; i++)
		out[i] = alphabet[sim_rng_below(&r, sizeof(alphabet) - 1)];
	memcpy(out + 16, "!5x", 4);
	snprintf(path, sizeof(path), "%s/exsvc.password", o->dir);
	char line[PASSWORD_MAX + 2];
	snprintf(line, sizeof(line), "%s\n", out);
	int rc = write_text(path, line, 0600);
	OPENSSL_cleanse(line, sizeof(line));
	*generated = 1;
	return rc;
}

static int write_agent_ini(const struct create_opts *o, const char *host, const char *site,
			   unsigned wave)
{
	char path[4096], text[2048];
	snprintf(path, sizeof(path), "%s/agents/%s.ini", o->dir, host);
	snprintf(text, sizeof(text),
		 "[agent]\nhost_id = %s\nsite = %s\nwave = %u\n\n"
		 "[collector]\naddress = %s\nname = %s\n\n"
		 "[tls]\nca = ../pki/ca.crt\ncert = ../pki/agent/%s.crt\nkey = ../pki/agent/%s.key\n"
		 "crl = ../pki/crl.pem\n\n"
		 "[probe]\nbackend = sim\nhost_file = ../hosts/%s.json\n\n"
		 "[spool]\ndir = ../spool/%s\n",
		 host, site, wave, o->collector, o->collector_name, host, host, host, host);
	return write_text(path, text, 0644);
}

static int write_collector_ini(const struct create_opts *o)
{
	char path[4096], text[2048];
	snprintf(path, sizeof(path), "%s/collector.ini", o->dir);
	snprintf(text, sizeof(text),
		 "[collector]\nid = %s\nlisten = %s\n\n[store]\npath = collector.db\n\n"
		 "[tls]\nca = pki/ca.crt\ncert = pki/collector/%s.crt\nkey = pki/collector/%s.key\n"
		 "crl = pki/crl.pem\n",
		 o->collector_name, o->collector, o->collector_name, o->collector_name);
	return write_text(path, text, 0644);
}

static void wave_date(uint64_t wave, char *out, size_t len)
{
	/* Wave 1 is planned for Monday 2026-12-07, each next wave a week later. */
	struct tm tm = {.tm_year = 2026 - 1900, .tm_mon = 11, .tm_mday = 7};
	int64_t ms = ((int64_t)timegm(&tm) + (int64_t)(wave - 1) * 7 * 86400) * 1000;
	char buf[32];
	util_format_time(ms, buf, sizeof(buf));
	snprintf(out, len, "%.10s", buf);
}

static const char *const site_names[] = {"HQ", "LONDON", "FRANKFURT", "NEWYORK", "SINGAPORE"};

static int create_fleet(const struct create_opts *o)
{
	char err[512], path[4096], name[16], password[PASSWORD_MAX + 1], date[16];
	struct sim_rng r;
	struct sim_host *h = NULL;
	size_t csv_len = 0, csv_cap = 64 + o->hosts * 48;
	char *csv = malloc(csv_cap);
	int rc = EXIT_FAILURE, generated;
	unsigned roles[4] = {0}, local = 0, sp2 = 0, per_site[5] = {0};
	if (!csv)
		return failed("out of memory");
	csv_len = (size_t)snprintf(csv, csv_cap, "host,wave,planned_date\n");

	const char *const subdirs[] = {"", "/hosts", "/agents", "/spool"};
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		snprintf(path, sizeof(path), "%s%s", o->dir, subdirs[i]);
		if (util_mkdir_p(path, 0755, err, sizeof(err)) < 0) {
			failed("%s", err);
			goto out;
		}
	}
	snprintf(path, sizeof(path), "%s/pki", o->dir);
	if (pki_init(path, PKI_ALGO_ECDSA_P256, 0, err, sizeof(err)) < 0) {
		failed("%s (create a fleet in a new directory)", err);
		goto out;
	}
	struct pki_issue_opts collector = {.role = PKI_ROLE_COLLECTOR, .name = o->collector_name};
	struct pki_issue_opts admin = {.role = PKI_ROLE_OPERATOR, .name = "admin"};
	if (pki_issue(path, &collector, NULL, err, sizeof(err)) < 0 ||
	    pki_issue(path, &admin, NULL, err, sizeof(err)) < 0) {
		failed("%s", err);
		goto out;
	}
	if (service_password(o, password, sizeof(password), &generated) != 0)
		goto out;

	sim_rng_seed(&r, o->seed, UINT64_MAX);
	size_t n_sites = 3 + (size_t)sim_rng_below(&r, 3);
	int width = o->hosts > 999 ? (o->hosts > 9999 ? 5 : 4) : 3;
	struct sim_fleet_opts fleet = {o->seed, o->domain, o->local_share, password};
	for (uint64_t i = 0; i < o->hosts; i++) {
		snprintf(name, sizeof(name), "EXCH%0*llu", width, (unsigned long long)i + 1);
		if (sim_host_generate(&fleet, (size_t)i, name, &h) < 0) {
			failed("%s: cannot generate the host", name);
			goto out;
		}
		snprintf(path, sizeof(path), "%s/hosts/%s.json", o->dir, name);
		if (sim_host_save_file(h, path, err, sizeof(err)) < 0) {
			failed("%s", err);
			goto out;
		}
		roles[h->role]++;
		local += sim_host_resolve(h, ".\\exsvc", NULL) == SIM_ACCOUNT_EXISTS;
		sp2 += h->exchange_service_pack < 3;
		sim_host_free(h);
		h = NULL;

		struct sim_rng site_rng;
		sim_rng_seed(&site_rng, o->seed ^ 0x5157e5u, i + 1);
		size_t site = (size_t)sim_rng_below(&site_rng, n_sites);
		per_site[site]++;
		unsigned wave = (unsigned)(1 + i * o->waves / o->hosts);
		wave_date(wave, date, sizeof(date));
		csv_len += (size_t)snprintf(csv + csv_len, csv_cap - csv_len, "%s,%u,%s\n", name,
					    wave, date);
		snprintf(path, sizeof(path), "%s/pki", o->dir);
		struct pki_issue_opts agent = {.role = PKI_ROLE_AGENT, .name = name};
		if (pki_issue(path, &agent, NULL, err, sizeof(err)) < 0) {
			failed("%s", err);
			goto out;
		}
		if (write_agent_ini(o, name, site_names[site], wave) != 0)
			goto out;
		if ((i + 1) % PROGRESS_EVERY == 0 && i + 1 < o->hosts)
			fprintf(stderr, "exfleet-sim create: %llu/%llu hosts\n",
				(unsigned long long)i + 1, (unsigned long long)o->hosts);
	}
	snprintf(path, sizeof(path), "%s/waves.csv", o->dir);
	if (write_text(path, csv, 0644) != 0 || write_collector_ini(o) != 0)
		goto out;

	printf("created %llu hosts in %s (seed %llu, domain %s)\n", (unsigned long long)o->hosts,
	       o->dir, (unsigned long long)o->seed, o->domain);
	printf("  roles: %u member servers, %u standalone servers, %u backup DCs\n",
	       roles[SIM_ROLE_MEMBER_SERVER], roles[SIM_ROLE_STANDALONE_SERVER],
	       roles[SIM_ROLE_BACKUP_DC]);
	printf("  Exchange account: %u hosts use a local account (.\\exsvc or HOST\\exsvc: at "
	       "risk), %llu use %s\\exsvc\n",
	       local, (unsigned long long)(o->hosts - local), o->domain);
	printf("  service pack: %llu on SP3, %u on SP2\n", (unsigned long long)(o->hosts - sp2), sp2);
	printf("  sites:");
	for (size_t s = 0; s < n_sites; s++)
		printf(" %s (%u)", site_names[s], per_site[s]);
	wave_date(o->waves, date, sizeof(date));
	printf("\n  waves: %llu, planned weekly from 2026-12-07 to %s\n",
	       (unsigned long long)o->waves, date);
	printf("  %s/hosts/*.json       simulated hosts\n", o->dir);
	printf("  %s/waves.csv          wave plan\n", o->dir);
	printf("  %s/pki/               CA, collector '%s', operator 'admin', one agent "
	       "certificate per host\n", o->dir, o->collector_name);
	printf("  %s/agents/*.ini       agent configurations (collector %s)\n", o->dir,
	       o->collector);
	printf("  %s/collector.ini      collector configuration\n", o->dir);
	if (generated)
		printf("  %s/exsvc.password     the Exchange account's password (mode 0600)\n",
		       o->dir);
	rc = EXIT_SUCCESS;
out:
	OPENSSL_cleanse(password, sizeof(password));
	sim_host_free(h);
	free(csv);
	return rc;
}

static int cmd_create(int argc, char **argv)
{
	static const struct option opts[] = {COMMON_OPTS,
					     {"hosts", required_argument, NULL, 'n'},
					     {"waves", required_argument, NULL, 'w'},
					     {"local-account-share", required_argument, NULL, 'l'},
					     {"seed", required_argument, NULL, 's'},
					     {"collector", required_argument, NULL, 'c'},
					     {"collector-name", required_argument, NULL, 'N'},
					     {"domain", required_argument, NULL, 'd'},
					     {"password-file", required_argument, NULL, 'p'},
					     {0}};
	struct create_opts o = {.seed = 1, .local_share = 0.3, .collector = "127.0.0.1:7443",
				.collector_name = "localhost", .domain = "CORP"};
	char host[256], port[16];
	int c, status;
	while ((c = next_opt(argc, argv, opts, &status)) != -1) {
		if (status >= 0)
			return status;
		char *end;
		switch (c) {
		case 'n':
			if (parse_u64(optarg, 1, HOSTS_MAX, &o.hosts) < 0)
				return usage_error("--hosts: '%s' is not in 1..%d", optarg, HOSTS_MAX);
			break;
		case 'w':
			if (parse_u64(optarg, 1, WAVES_MAX, &o.waves) < 0)
				return usage_error("--waves: '%s' is not in 1..%d", optarg, WAVES_MAX);
			break;
		case 'l':
			errno = 0;
			o.local_share = strtod(optarg, &end);
			if (errno || *end || end == optarg || !(o.local_share >= 0.0) ||
			    !(o.local_share <= 1.0))
				return usage_error("--local-account-share: '%s' is not a number in "
						   "0..1", optarg);
			break;
		case 's':
			if (parse_u64(optarg, 0, UINT64_MAX, &o.seed) < 0)
				return usage_error("--seed: '%s' is not a number", optarg);
			break;
		case 'c':
			o.collector = optarg;
			if (util_split_hostport(optarg, host, sizeof(host), port, sizeof(port)) < 0)
				return usage_error("--collector: '%s' is not HOST:PORT", optarg);
			break;
		case 'N':
			o.collector_name = optarg;
			if (!pki_name_valid(optarg))
				return usage_error("--collector-name: '%s' is not a DNS name", optarg);
			break;
		case 'd':
			o.domain = optarg;
			break;
		case 'p':
			o.password_file = optarg;
			break;
		}
	}
	if (optind >= argc)
		return usage_error("missing DIR");
	if (optind + 1 < argc)
		return usage_error("unexpected argument '%s'", argv[optind + 1]);
	o.dir = argv[optind];
	if (!o.hosts)
		return usage_error("--hosts N is required");
	if (!o.waves)
		return usage_error("--waves W is required");
	size_t dlen = strlen(o.domain);
	if (dlen < 1 || dlen > 15 ||
	    strspn(o.domain, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != dlen)
		return usage_error("--domain: '%s' is not a NetBIOS domain name (1-15 of A-Z a-z "
				   "0-9 - _)", o.domain);
	return create_fleet(&o);
}

/* ---- the table ---- */

static int cmd_help(int argc, char **argv);

static const struct command commands[] = {
	{"create", cmd_create,
	 "create DIR --hosts N --waves W [--local-account-share F] [--seed S]\n"
	 "       [--collector HOST:PORT] [--collector-name NAME] [--domain NAME] [--password-file FILE]",
	 "Creates a simulated fleet in the new directory DIR:\n"
	 "  DIR/hosts/EXCH001.json ...  one Windows 2000 + Exchange 5.5 host each, all\n"
	 "                              Exchange services running with the rights they need\n"
	 "  DIR/waves.csv               host,wave,planned_date (weekly from 2026-12-07)\n"
	 "  DIR/pki/                    a CA, the collector's certificate, operator 'admin',\n"
	 "                              one agent certificate per host (Ed25519)\n"
	 "  DIR/agents/EXCH001.ini ...  agent configurations (probe backend sim)\n"
	 "  DIR/collector.ini           the collector's configuration\n"
	 "  DIR/exsvc.password          the Exchange account's password, unless --password-file\n"
	 "Hosts vary: most are member servers with the Exchange services logging on as\n"
	 "DOMAIN\\exsvc; a share (--local-account-share, default 0.3) use a local account\n"
	 "(.\\exsvc or HOST\\exsvc), a few of those are standalone servers; a few hosts are\n"
	 "already domain controllers, a few run SP2, some lack the Internet Mail Service or\n"
	 "the Event Service, and some run the Event Service as LocalSystem.\n"
	 "The same --seed gives byte-identical host files, wave plan and configurations\n"
	 "(keys and certificates are new each time).\n"
	 "Options:\n"
	 "  --hosts N                 1..99999 hosts, named EXCH001...\n"
	 "  --waves W                 1..520 migration waves, hosts split in order\n"
	 "  --local-account-share F   0..1, default 0.3\n"
	 "  --seed S                  default 1\n"
	 "  --collector HOST:PORT     written to the agent configurations, default 127.0.0.1:7443\n"
	 "  --collector-name NAME     the collector certificate's name, default localhost\n"
	 "  --domain NAME             NetBIOS domain name, default CORP\n"
	 "  --password-file FILE      the Exchange account's password (first line)\n"},
	{"dcpromo", cmd_dcpromo, "dcpromo HOSTFILE [--backup]",
	 "Promotes the host to a domain controller (KB Q255269): the primary, or a backup\n"
	 "with --backup. The SAM and its local accounts are removed, the security policy is\n"
	 "replaced so domain accounts lose the rights granted on this server, POP3/IMAP4\n"
	 "break until the Exchange service pack is reapplied, and the host reboots:\n"
	 "services whose account is gone or lacks the right to log on as a service fail\n"
	 "with 1069 (SCM 7038 and 7000), their dependents with 1068 (SCM 7001).\n"},
	{"logon", cmd_logon, "logon HOSTFILE [--pop3 N] [--imap M]",
	 "Simulates N POP3 and M IMAP4 client logons. While POP3/IMAP4 are broken (or the\n"
	 "Information Store's account lacks SeTcbPrivilege) each logon fails and logs\n"
	 "MSExchangePOP3 or MSExchangeIMAP4 event 13003 (Authentication, \"A required\n"
	 "privilege is not held by the client\"). Logons succeed silently on a healthy\n"
	 "host and are refused, with nothing logged, while the Information Store is down.\n"},
	{"reboot", cmd_reboot, "reboot HOSTFILE",
	 "Restarts the host: every service stops (EventLog 6006), then (EventLog 6005)\n"
	 "boot, system and auto services start in dependency order with the same logon\n"
	 "checks as any start.\n"},
	{"show", cmd_show, "show HOSTFILE",
	 "Prints the host: role, SAM, Exchange service pack state, services with state,\n"
	 "exit code and account, rights per account, and the last 10 events.\n"},
	{"help", cmd_help, "help [COMMAND]", "Prints the commands, or one command's help.\n"},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void print_usage(FILE *out)
{
	fputs("usage: exfleet-sim COMMAND [ARGS]\n"
	      "Simulated Exchange 5.5 hosts for exfleet (KB Q255269).\n\n", out);
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(out, "  exfleet-sim %s\n", commands[i].usage);
	fputs("\nexfleet-sim COMMAND --help describes a command. Exit status: 0 done, 1 failed, "
	      "2 usage error.\n", out);
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static int cmd_help(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--help") != 0 && strcmp(argv[1], "-h") != 0) {
		const struct command *c = find_command(argv[1]);
		if (!c)
			return usage_error("no command '%s'", argv[1]);
		printf("usage: exfleet-sim %s\n\n%s", c->usage, c->help);
		return EXIT_SUCCESS;
	}
	print_usage(stdout);
	return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		print_usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		print_usage(stdout);
		return EXIT_SUCCESS;
	}
	current = find_command(argv[1]);
	if (!current) {
		fprintf(stderr, "exfleet-sim: no command '%s'\n", argv[1]);
		print_usage(stderr);
		return EXIT_USAGE;
	}
	return current->fn(argc - 1, argv + 1);
}
