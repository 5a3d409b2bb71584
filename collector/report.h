/* Wave report: each wave's progress through the domain-controller promotions,
 * as a pure function of one row per host (what the store knows of it) and a
 * generation time the caller passes, so the same rows give the same bytes.
 *
 * Per wave, sorted naturally ("2" before "10", "Wave 2" before "wave 10";
 * hosts with no wave last, as "(none)"), and for the fleet:
 *   hosts       hosts in the wave
 *   promoted    hosts with a promotion time
 *   status      how many hosts are in each status; a host that never
 *               connected (no status, or connectivity NEVER_SEEN) counts as
 *               NEVER_SEEN instead; offline counts hosts seen once, silent now
 *   done        promoted and HEALTHY or REPAIRED; percent of hosts, in tenths
 *   promotion to detection, detection to repair
 *               over the hosts that have both ends (and the end not before
 *               the start): median and 90th percentile by nearest rank, the
 *               smallest duration with at least that share of the hosts at
 *               or under it
 *   attention   hosts AFFECTED, NEEDS_SP_REINSTALL, AT_RISK, DEGRADED or
 *               REPAIRING, and hosts of a wave that are NEVER_SEEN or
 *               OFFLINE; worst first (that order), then by host id
 *
 * Formats, each written to a FILE *:
 *   REPORT_TABLE  aligned plain-text tables and the attention list
 *   REPORT_CSV    one row per wave then "(total)", CRLF, RFC 4180 quoting;
 *                 columns: wave, planned_first, planned_last, hosts,
 *                 promoted, done, percent_done, healthy, repaired, degraded,
 *                 at_risk, affected, needs_sp_reinstall, repairing,
 *                 never_seen, offline, attention, detect_hosts,
 *                 detect_median_s, detect_p90_s, repair_hosts,
 *                 repair_median_s, repair_p90_s. Hosts without a wave are
 *                 "(none)". An empty cell: no such value (no planned date, no
 *                 duration). A text cell that a spreadsheet would run as a
 *                 formula (= + - @ first) gets a leading "'".
 *   REPORT_JSON   {generated_at, generated_at_ms, wave_filter, percentile,
 *                 waves: [...], total}; numbers as numbers, durations in
 *                 whole seconds, null when none
 *   REPORT_HTML   one standalone page to mail or print: inline CSS and SVG,
 *                 no script, no external resource
 * Every string from a host (ids, sites, waves, evidence) is copied when the
 * report is built; invalid UTF-8 and control characters become U+FFFD there
 * (tabs and line breaks a space), so no format can carry a terminal escape or
 * break its layout. */
#ifndef EXFLEET_REPORT_H
#define EXFLEET_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* One host as the store knows it. Strings are read during report_build only. */
struct report_host {
	const char *host_id;
	const char *wave;         /* NULL or "": no wave */
	const char *site;         /* NULL or "": unknown */
	const char *status;       /* "HEALTHY" ... "REPAIRING"; NULL: never seen */
	const char *connectivity; /* "ONLINE", "OFFLINE", "NEVER_SEEN"; NULL:
				   * NEVER_SEEN without a status, else ONLINE */
	int64_t promoted_at_ms;   /* 0: not promoted */
	int64_t detected_at_ms;   /* first AFFECTED or NEEDS_SP_REINSTALL at or
				   * after the promotion; 0: none */
	int64_t repaired_at_ms;   /* first REPAIRED after that; 0: none */
	const char *const *evidence;
	size_t n_evidence;
	const char *planned_date; /* "YYYY-MM-DD"; NULL or "": unknown */
};

/* Counted states: enum host_status's seven (status.h, same order), then: */
#define REPORT_NEVER_SEEN 7
#define REPORT_N_STATES 8

struct report_duration {
	size_t hosts;      /* hosts with both ends; 0: the two below mean nothing */
	int64_t median_ms;
	int64_t p90_ms;
};

struct report_attention {
	char *host_id;
	char *site;         /* "" when unknown */
	int state;          /* 0..REPORT_NEVER_SEEN */
	int connectivity;   /* enum connectivity (status.h) */
	char **evidence;
	size_t n_evidence;
};

struct report_wave {
	char *name;         /* "(none)" for hosts without a wave */
	int no_wave;
	char planned_first[11], planned_last[11]; /* "" when none is known */
	size_t hosts, promoted, done, offline;
	size_t states[REPORT_N_STATES];
	int done_permille;  /* done * 1000 / hosts, rounded; -1 when no hosts */
	struct report_duration detect, repair;
	struct report_attention *attention;
	size_t n_attention;
};

struct report {
	int64_t generated_at_ms;
	char *only_wave;            /* NULL: every wave */
	struct report_wave *waves;  /* natural order, "(none)" last */
	size_t n_waves;
	struct report_wave total;   /* the fleet; no attention list */
};

enum report_format { REPORT_TABLE, REPORT_CSV, REPORT_JSON, REPORT_HTML };

/* Builds the report of hosts (each host once), of every wave or only the one
 * named only_wave ("(none)": the hosts without a wave). Returns 0 and *out,
 * UV_EINVAL with a message in err for a host without an id or with a status
 * or connectivity name not known, or UV_ENOMEM. */
int report_build(const struct report_host *hosts, size_t n, const char *only_wave,
		 int64_t generated_at_ms, struct report **out, char *err, size_t errlen);
void report_free(struct report *r);

/* The format named ("table", "csv", "json", "html"), or -1. */
int report_format_parse(const char *name);

/* Writes r in format f to out. Returns 0, UV_EIO when out reports a write
 * error, UV_ENOMEM, or UV_EINVAL for a format not known. */
int report_write(const struct report *r, enum report_format f, FILE *out);

#endif
