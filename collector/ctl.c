/* exfleetctl: the table of commands and what every command shares. A new
 * command is one line in commands[] and one function (ctl_<name>.c). */
#include "ctl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "util.h"

static const struct ctl_command commands[] = {
    {"pki", ctl_pki, "create the deployment's CA, issue, revoke and list certificates"},
    {"hosts", ctl_hosts, "list the fleet's hosts with status, connectivity and evidence"},
    {"host", ctl_host, "one host in detail: evidence, services, history, events, commands"},
    {"events", ctl_events, "the event-log records agents forwarded, newest first"},
    {"waves", ctl_waves, "import the wave plan (CSV) or list the waves"},
    {"report", ctl_report, "the wave report: table, CSV, JSON or a standalone HTML page"},
    {"commands", ctl_commands, "the commands sent to hosts, newest first, with their state"},
    {"command", ctl_command, "one command with its result, step by step"},
    {"queue", ctl_queue, "sign and send a RESCAN or RESTART_SERVICES command to a host"},
    {"repair", ctl_repair, "repair hosts after dcpromo (KB Q255269) with signed commands"},
    {"audit", ctl_audit, "the audit log of commands and results; verify its hash chain"},
    {"dashboard", ctl_dashboard, "a one-time link that signs you in to the web dashboard"},
};
#define COMMAND_COUNT (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
	fprintf(out, "usage: exfleetctl <command> [arguments]\n"
	             "       exfleetctl help <command>\n"
	             "       exfleetctl --help | --version\n"
	             "\n"
	             "commands:\n");
	for (size_t i = 0; i < COMMAND_COUNT; i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].help);
	fprintf(out,
		"\nRun \"exfleetctl help <command>\" for a command's arguments. Every command\n"
		"but pki talks to the collector's HTTPS API; its address and your\n"
		"certificate come from flags or ~/.config/exfleet/ctl.ini:\n"
		"\n"
		"  [collector]\n"
		"  url = https://collector.example:8443\n"
		"  ca = /etc/exfleet/pki/ca.crt\n"
		"  cert = ~/.config/exfleet/alice.crt\n"
		"  key = ~/.config/exfleet/alice.key\n"
		"\n"
		"Exit status: 0 done, 1 the operation failed, 2 bad usage, 3 the collector\n"
		"cannot be reached or did not accept your certificate.\n");
}

int ctl_usage_error(const char *what, const char *help, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "exfleetctl %s: ", what);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "; see exfleetctl %s%s--help\n", help ? help : "", help ? " " : "");
	return CTL_USAGE;
}

int ctl_fail(const char *what, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "exfleetctl %s: ", what);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return CTL_FAILED;
}

int ctl_wants_help(int argc, char **argv)
{
	return argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	                     strcmp(argv[1], "help") == 0);
}

const struct ctl_command *ctl_find(const struct ctl_command *table, size_t count, const char *name)
{
	for (size_t i = 0; i < count; i++)
		if (strcmp(table[i].name, name) == 0)
			return &table[i];
	return NULL;
}

int main(int argc, char **argv)
{
	const struct ctl_command *cmd;

	/* A collector that drops the connection is an error to report, not a
	 * signal that ends us. */
	util_ignore_sigpipe();
	if (argc < 2) {
		usage(stderr);
		return CTL_USAGE;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("exfleetctl %s\n", EXFLEET_VERSION);
		return CTL_OK;
	}
	if (ctl_wants_help(argc, argv)) {
		if (argc == 2 || strcmp(argv[1], "help") != 0) {
			usage(stdout);
			return CTL_OK;
		}
		/* "help pki" is "pki --help", so each command owns its text. */
		cmd = ctl_find(commands, COMMAND_COUNT, argv[2]);
		if (!cmd)
			return ctl_usage_error("help", NULL, "unknown command '%s'", argv[2]);
		char help_arg[] = "--help";
		char *help_argv[] = {argv[2], help_arg, NULL};
		return cmd->fn(2, help_argv);
	}
	if (argv[1][0] == '-')
		return ctl_usage_error(argv[1], NULL, "unknown option");
	cmd = ctl_find(commands, COMMAND_COUNT, argv[1]);
	if (!cmd)
		return ctl_usage_error(argv[1], NULL, "unknown command");
	return cmd->fn(argc - 1, argv + 1);
}

int ctl_load_operator(const char *what, const char *cert_file, const char *key_file,
		      X509 **cert, EVP_PKEY **key)
{
	char err[512], *pem = NULL;
	size_t len = 0;
	*cert = NULL;
	*key = NULL;
	if (util_check_private_file(key_file, err, sizeof(err)) < 0)
		return ctl_fail(what, "%s", err);
	FILE *f = fopen(cert_file, "r");
	*cert = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	if (!*cert)
		return ctl_fail(what, "%s: not a PEM certificate (or cannot be read)", cert_file);
	/* The key's text is read here so that it can be wiped once parsed. */
	if (util_read_file(key_file, 1u << 20, &pem, &len, err, sizeof(err)) < 0)
		return ctl_fail(what, "%s", err);
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	*key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	OPENSSL_cleanse(pem, len);
	free(pem);
	if (!*key)
		return ctl_fail(what, "%s: not a PEM private key", key_file);
	if (X509_check_private_key(*cert, *key) != 1)
		return ctl_fail(what, "%s does not belong to %s", key_file, cert_file);
	return CTL_OK;
}

int ctl_parse_duration(const char *text, int64_t *ms)
{
	char *end;
	long long n = strtoll(text, &end, 10);
	if (end == text || n <= 0 || *text == '+' || *text == ' ')
		return -1;
	int64_t unit = !*end || strcmp(end, "s") == 0 ? 1000
		       : strcmp(end, "ms") == 0      ? 1
		       : strcmp(end, "m") == 0       ? 60000
		       : strcmp(end, "h") == 0       ? 3600000
		       : strcmp(end, "d") == 0       ? 86400000
						     : 0;
	if (!unit || n > 366LL * 86400000 / unit)
		return -1;
	*ms = n * unit;
	return 0;
}

/* ---- output ---- */

void ctl_print_json(json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2));
	putchar('\n');
}

void ctl_csv(FILE *out, const char *value, int last)
{
	if (!value)
		value = "";
	if (strpbrk(value, ",\"\r\n")) {
		fputc('"', out);
		for (const char *p = value; *p; p++) {
			if (*p == '"')
				fputc('"', out);
			fputc(*p, out);
		}
		fputc('"', out);
	} else {
		fputs(value, out);
	}
	fputs(last ? "\r\n" : ",", out);
}

const char *ctl_str(json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : dflt;
}

const char *ctl_time(json_t *o, const char *key, char *buf, size_t len)
{
	json_int_t ms = json_integer_value(json_object_get(o, key));
	if (ms <= 0)
		return "-";
	util_format_time(ms, buf, len);
	return buf;
}

int ctl_parse_time(const char *text, int64_t *ms)
{
	int y, mo, d, h, mi, s, n = 0, frac = 0;
	if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &n) != 6)
		return -1;
	const char *rest = text + n;
	if (*rest == '.') {
		size_t digits = strspn(rest + 1, "0123456789");
		if (digits == 0)
			return -1;
		for (size_t k = 0; k < 3; k++)
			frac = frac * 10 + (k < digits ? rest[1 + k] - '0' : 0);
		rest += 1 + digits;
	}
	if (strcmp(rest, "Z") != 0)
		return -1;
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
			.tm_min = mi, .tm_sec = s};
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	*ms = (int64_t)t * 1000 + frac;
	return 0;
}
