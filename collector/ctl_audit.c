/* exfleetctl audit: the append-only log of commands and their outcomes, and
 * a check of its hash chain. Reads the collector's store file directly until
 * the collector's API serves operators. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "store.h"
#include "util.h"

static const char audit_usage[] =
	"usage: exfleetctl audit [--store FILE]\n"
	"       exfleetctl audit verify [--store FILE]\n"
	"\n"
	"Lists the audit log: every command submitted (by whom, for which host),\n"
	"delivered or expired, and every result an agent sent, refusals with their\n"
	"reason. Each entry holds the hash of the one before; verify recomputes the\n"
	"chain and names the first entry that was changed, removed or inserted\n"
	"(exit status 1), or says the log is whole.\n";

static void line_cb(const struct store_row *row, void *arg)
{
	char when[32];
	const char *at = row->values[1];
	util_format_time(at ? strtoll(at, NULL, 10) : 0, when, sizeof(when));
	printf("%6s  %s  %-14s %-20s %s\n", row->values[0], when,
	       row->values[2] ? row->values[2] : "", row->values[3] ? row->values[3] : "",
	       row->values[4] ? row->values[4] : "");
}

int ctl_audit(int argc, char **argv)
{
	static const struct option opts[] = {{"store", required_argument, NULL, 'd'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *path = "collector.db";
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'd') {
			path = optarg;
		} else if (c == 'h') {
			fputs(audit_usage, stdout);
			return CTL_OK;
		} else {
			return ctl_usage_error("audit", "audit", "unknown option");
		}
	}
	int verify = optind < argc && strcmp(argv[optind], "verify") == 0;
	if (argc - optind != verify)
		return ctl_usage_error("audit", "audit", "unexpected argument '%s'", argv[optind]);
	struct store *st;
	char err[512];
	if (store_open_reader(&st, path, err, sizeof(err)) < 0)
		return ctl_fail("audit", "%s", err);
	int rc = CTL_OK;
	if (verify) {
		int64_t entries, bad;
		if (store_audit_verify(st, &entries, &bad, err, sizeof(err)) < 0) {
			rc = ctl_fail("audit verify", "%s", err);
		} else if (bad) {
			rc = ctl_fail("audit verify",
				      "%s: entry %lld does not match the chain (changed, or an entry "
				      "before it was removed or inserted); %lld entries read",
				      path, (long long)bad, (long long)entries);
		} else {
			printf("%s: the audit log is whole: %lld entries, each linked to the one "
			       "before\n",
			       path, (long long)entries);
		}
	} else {
		printf("%6s  %-20s  %-14s %-20s %s\n", "ID", "AT", "ACTOR", "ACTION", "DETAIL");
		if (store_view(st, STORE_AUDIT, NULL, NULL, NULL, line_cb, NULL, err, sizeof(err)) <
		    0)
			rc = ctl_fail("audit", "%s", err);
	}
	store_close_reader(st);
	return rc;
}
