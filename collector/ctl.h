/* exfleetctl: the operator's command line. Each command is one function that
 * takes its own arguments (argv[0] is the command's name) and returns the
 * process exit code. */
#ifndef EXFLEET_CTL_H
#define EXFLEET_CTL_H

#include <stdint.h>

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

struct store;
struct store_row;
typedef struct x509_st X509;
typedef struct evp_pkey_st EVP_PKEY;

/* A column of a store row by name; NULL when absent or SQL NULL. */
const char *ctl_value(const struct store_row *row, const char *name);
int64_t ctl_value_int(const struct store_row *row, const char *name);
/* Opens the collector's store file to read (and queue commands); prints
 * the reason and returns CTL_FAILED when it cannot. */
int ctl_open_store(const char *what, const char *path, struct store **st);
/* The operator's PEM certificate and private key (refused when others can
 * read the key, or when they do not match); prints the reason on failure. */
int ctl_load_operator(const char *what, const char *cert_file, const char *key_file,
		      X509 **cert, EVP_PKEY **key);

int ctl_pki(int argc, char **argv);
int ctl_hosts(int argc, char **argv);
int ctl_host(int argc, char **argv);
int ctl_queue(int argc, char **argv);
int ctl_waves(int argc, char **argv);
int ctl_report(int argc, char **argv);
int ctl_audit(int argc, char **argv);
int ctl_repair(int argc, char **argv);

#endif
