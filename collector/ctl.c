/* exfleetctl: the table of commands and what every command shares. A new
 * command is one line in commands[] and one function (ctl_<name>.c). */
#include "ctl.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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
