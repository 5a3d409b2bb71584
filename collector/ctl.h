/* exfleetctl: the operator's command line. Each command is one function that
 * takes its own arguments (argv[0] is the command's name) and returns the
 * process exit code. */
#ifndef EXFLEET_CTL_H
#define EXFLEET_CTL_H

#include "log.h" /* LOG_PRINTF */

enum ctl_exit { CTL_OK = 0, CTL_FAILED = 1, CTL_USAGE = 2 };

struct ctl_command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help; /* one line for the command list */
};

/* "exfleetctl WHAT: message; see exfleetctl HELP --help" on stderr; returns
 * CTL_USAGE. what names the command as typed ("pki issue"), help the command
 * whose help to point to ("pki"). */
int ctl_usage_error(const char *what, const char *help, const char *fmt, ...) LOG_PRINTF(3, 4);
/* "exfleetctl WHAT: message" on stderr; returns CTL_FAILED. */
int ctl_fail(const char *what, const char *fmt, ...) LOG_PRINTF(2, 3);
/* 1 when argv[1] asks for help: --help, -h or help. */
int ctl_wants_help(int argc, char **argv);
/* Finds name in a table of count commands; NULL when there is none. */
const struct ctl_command *ctl_find(const struct ctl_command *table, size_t count, const char *name);

int ctl_pki(int argc, char **argv);
int ctl_hosts(int argc, char **argv);
int ctl_host(int argc, char **argv);
int ctl_queue(int argc, char **argv);
int ctl_waves(int argc, char **argv);
int ctl_report(int argc, char **argv);
int ctl_audit(int argc, char **argv);
int ctl_repair(int argc, char **argv);

#endif
