/* exfleetctl: the operator's command line. Each command is one function that
 * takes its own arguments (argv[0] is the command's name) and returns the
 * process exit code. Every command but pki talks to the collector's HTTPS
 * API (ctl_api.c); pki works on the local PKI directory. */
#ifndef EXFLEET_CTL_H
#define EXFLEET_CTL_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "log.h" /* LOG_PRINTF */

enum ctl_exit { CTL_OK = 0, CTL_FAILED = 1, CTL_USAGE = 2, CTL_UNREACHABLE = 3 };

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
/* "30s", "5m", "2h", "1d", "500ms"; a bare number is seconds: 0 or -1. */
int ctl_parse_duration(const char *text, int64_t *ms);

typedef struct x509_st X509;
typedef struct evp_pkey_st EVP_PKEY;
/* The operator's PEM certificate and private key (refused when others can
 * read the key, or when they do not match); prints the reason on failure. */
int ctl_load_operator(const char *what, const char *cert_file, const char *key_file,
		      X509 **cert, EVP_PKEY **key);

/* ---- talking to the collector (ctl_api.c) ---- */

/* Options every API command takes, handled by ctl_api_option. */
enum {
	CTL_OPT_URL = 0x100,
	CTL_OPT_CA,
	CTL_OPT_CERT,
	CTL_OPT_KEY,
	CTL_OPT_CONFIG,
	CTL_OPT_TIMEOUT,
	CTL_OPT_JSON,
	CTL_OPT_CSV,
};
#define CTL_CONN_OPTIONS                                                                    \
	{"url", required_argument, NULL, CTL_OPT_URL},                                      \
	{"ca", required_argument, NULL, CTL_OPT_CA},                                        \
	{"cert", required_argument, NULL, CTL_OPT_CERT},                                    \
	{"key", required_argument, NULL, CTL_OPT_KEY},                                      \
	{"config", required_argument, NULL, CTL_OPT_CONFIG},                                \
	{"timeout", required_argument, NULL, CTL_OPT_TIMEOUT},                              \
	{"help", no_argument, NULL, 'h'}
#define CTL_JSON_OPTION {"json", no_argument, NULL, CTL_OPT_JSON}
#define CTL_CSV_OPTION {"csv", no_argument, NULL, CTL_OPT_CSV}

/* For each command's --help. */
#define CTL_CONN_USAGE                                                                      \
	"\n"                                                                                \
	"Connection (flags override the [collector] section of the config file):\n"        \
	"  --url URL        the collector's API (url; default https://127.0.0.1:8443)\n"     \
	"  --ca FILE        the deployment's CA certificate (ca)\n"                         \
	"  --cert FILE      your viewer or operator certificate (cert)\n"                   \
	"  --key FILE       its private key, readable by you only (key)\n"                  \
	"  --config FILE    default $XDG_CONFIG_HOME/exfleet/ctl.ini or\n"                  \
	"                   ~/.config/exfleet/ctl.ini (need not exist)\n"                  \
	"  --timeout DUR    for each request (timeout; default 30s)\n"                      \
	"\n"                                                                                \
	"Exit status: 0 done, 1 the operation failed, 2 bad usage, 3 the collector\n"        \
	"cannot be reached or did not accept your certificate.\n"

struct ctl_http;
struct ctl_http_response;

struct ctl_api {
	const char *what;  /* the command as typed, for messages: "waves import" */
	const char *help;  /* the command whose --help to point to */
	/* flags; NULL or 0 when not given */
	const char *url, *ca, *cert, *key, *config;
	int64_t timeout_ms;
	int json, csv;
	/* Errors are printed ("exfleetctl WHAT: message") unless quiet; either
	 * way the last one stays in message. */
	int quiet;
	char message[1024];
	/* once connected: the settings in force */
	const char *url_used, *cert_used, *key_used, *ca_used;
	struct ctl_ini *ini;
	struct ctl_http *http;
};

/* Handles c, an option getopt_long returned that the command itself does
 * not take: the connection options, --json and --csv, and the errors '?'
 * and ':'. CTL_OK, or CTL_USAGE once it has said why. */
int ctl_api_option(struct ctl_api *api, int c, char **argv);
/* Settles the connection settings (flags, then the config file, then the
 * defaults) and loads the certificates; refuses --json with --csv: CTL_OK
 * or CTL_USAGE, reported. */
int ctl_api_connect(struct ctl_api *api);
void ctl_api_close(struct ctl_api *api);

/* One request; a response of any status is CTL_OK. CTL_UNREACHABLE, or
 * CTL_FAILED for an answer that is not HTTP, once reported. */
int ctl_api_call(struct ctl_api *api, const char *method, const char *path,
		 const char *content_type, const void *body, size_t len,
		 struct ctl_http_response *r);
/* Reports an error response (status 400 and up) with the API's message:
 * CTL_UNREACHABLE for 401 and for a 403 that refuses the certificate's
 * role, else CTL_FAILED. */
int ctl_api_error(struct ctl_api *api, const char *method, const struct ctl_http_response *r);
/* GET or POST (a JSON body, or none) expecting JSON back with a 2xx status:
 * CTL_OK with *out, or the exit code once reported. */
int ctl_api_get(struct ctl_api *api, const char *path, json_t **out);
int ctl_api_post_json(struct ctl_api *api, const char *path, json_t *body, json_t **out);
/* A list command's --limit: the newest N items, 0 for all. */
#define CTL_LIST_DEFAULT 100
/* Sets api->message and prints it ("exfleetctl WHAT: message") unless
 * api->quiet: rc. */
int ctl_api_report(struct ctl_api *api, int rc, const char *fmt, ...) LOG_PRINTF(3, 4);
/* Parses --limit's text into *limit: CTL_OK, or CTL_USAGE once reported. */
int ctl_api_limit(struct ctl_api *api, const char *text, long *limit);
/* The items of a list, following "next" page after page; at most max
 * items (0: all). path may already carry a query. */
int ctl_api_get_items(struct ctl_api *api, const char *path, size_t max, json_t **items);
/* A list as its command's flags ask: --json, --csv (csv prints it), or a
 * table (table prints it), with empty the line said when there are none. */
void ctl_api_print_list(const struct ctl_api *api, json_t *items, void (*csv)(json_t *items),
			void (*table)(json_t *items), const char *empty);

/* A request path with its query, percent-encoded. */
struct ctl_path {
	char text[2048];
	size_t len;
	int too_long;
};
/* path, then segment (percent-encoded) when it is not NULL. */
void ctl_path_init(struct ctl_path *p, const char *path, const char *segment);
/* Adds name=value (skipped when value is NULL). */
void ctl_path_param(struct ctl_path *p, const char *name, const char *value);

/* ---- commands for agents (ctl_commands.c) ---- */

struct Exfleet__CommandBody;
/* A new random command id: 32 hexadecimal characters. 0 or -1. */
int ctl_command_id(char id[33]);
/* Signs body with the operator's key and certificate and submits it with
 * POST /api/v1/commands: CTL_OK with the API's answer, or the exit code
 * once reported (api->quiet and api->message apply). */
int ctl_submit_command(struct ctl_api *api, const struct Exfleet__CommandBody *body, X509 *cert,
		       EVP_PKEY *key, json_t **answer);
struct Exfleet__Command;
/* Submits a command already signed (one of a batch, say) for host_id, as
 * ctl_submit_command does. */
int ctl_post_command(struct ctl_api *api, const char *host_id, const struct Exfleet__Command *cmd,
		     json_t **answer);

/* ---- output (ctl.c) ---- */

/* j, indented, and a newline on standard output. */
void ctl_print_json(json_t *j);
/* One CSV field (RFC 4180 quoting when needed), then ',' or the line end. */
void ctl_csv(FILE *out, const char *value, int last);
/* The string at key, or dflt when absent or not a string. */
const char *ctl_str(json_t *o, const char *key, const char *dflt);
/* A time in ms since 1970 at key as "2026-11-29T10:02:11Z", or "-". */
const char *ctl_time(json_t *o, const char *key, char *buf, size_t len);
/* "2026-11-29T10:02:11Z" (or with .mmm) to ms: 0 or -1. */
int ctl_parse_time(const char *text, int64_t *ms);

int ctl_pki(int argc, char **argv);
int ctl_hosts(int argc, char **argv);
int ctl_host(int argc, char **argv);
int ctl_events(int argc, char **argv);
int ctl_waves(int argc, char **argv);
int ctl_report(int argc, char **argv);
int ctl_commands(int argc, char **argv);
int ctl_command(int argc, char **argv);
int ctl_queue(int argc, char **argv);
int ctl_repair(int argc, char **argv);
int ctl_audit(int argc, char **argv);
int ctl_dashboard(int argc, char **argv);

#endif
