/* exfleetctl: the table of commands and what every command shares. A new
 * command is one line in commands[] and one function (ctl_<name>.c). */
#include "ctl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "store.h"
#include "util.h"

static const struct ctl_command commands[] = {
    {"pki", ctl_pki, "create the deployment's CA, issue, revoke and list certificates"},
    {"hosts", ctl_hosts, "list the fleet's hosts with status, connectivity and evidence"},
    {"host", ctl_host, "one host in detail: evidence, services, history, events, commands"},
    {"queue", ctl_queue, "queue a RESCAN or RESTART_SERVICES command for a host"},
    {"waves", ctl_waves, "import the wave plan (CSV) or list the waves"},
    {"report", ctl_report, "the wave report: table, CSV, JSON or a standalone HTML page"},
    {"repair", ctl_repair, "repair hosts after dcpromo (KB Q255269) with signed commands"},
    {"audit", ctl_audit, "the audit log of commands and results; verify its hash chain"},
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
	fprintf(out, "\nRun \"exfleetctl help <command>\" for a command's arguments.\n");
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

const char *ctl_value(const struct store_row *row, const char *name)
{
	for (int i = 0; i < row->n; i++)
		if (strcmp(row->names[i], name) == 0)
			return row->values[i];
	return NULL;
}

int64_t ctl_value_int(const struct store_row *row, const char *name)
{
	const char *v = ctl_value(row, name);
	return v ? strtoll(v, NULL, 10) : 0;
}

int ctl_open_store(const char *what, const char *path, struct store **st)
{
	char err[512];
	if (store_open_reader(st, path, err, sizeof(err)) < 0)
		return ctl_fail(what, "%s", err);
	return CTL_OK;
}

int ctl_load_operator(const char *what, const char *cert_file, const char *key_file,
		      X509 **cert, EVP_PKEY **key)
{
	char err[512];
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
	f = fopen(key_file, "r");
	*key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	if (!*key)
		return ctl_fail(what, "%s: not a PEM private key (or cannot be read)", key_file);
	if (X509_check_private_key(*cert, *key) != 1)
		return ctl_fail(what, "%s does not belong to %s", key_file, cert_file);
	return CTL_OK;
}
