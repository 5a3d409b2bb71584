/* Wave report: a fixed fleet gives known numbers, and each format gives the
 * bytes in tests/golden/ exactly.
 *
 * The golden files are read from $EXFLEET_GOLDEN_DIR, else from
 * EXFLEET_SOURCE_DIR/tests/golden (a -D from the build). With
 * EXFLEET_UPDATE_GOLDEN set, the test writes them instead of comparing:
 *   EXFLEET_UPDATE_GOLDEN=1 ./test_report
 * then read the diff before committing; a golden is a reviewed answer, not a
 * record of what the code happened to print. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "report.h"
#include "status.h"
#include "util.h"

#define S(t) ((int64_t)(t) * 1000)
#define WAVE1 S(1795946400) /* 2026-11-29T10:00:00Z */
#define WAVE2 S(1796551200) /* 2026-12-06T10:00:00Z */
#define EARLY S(1795165200) /* 2026-11-20T09:00:00Z */
#define GENERATED S(1796634000) /* 2026-12-07T09:00:00Z */

#define EV(...)                                                                          \
	.evidence = (const char *const[]){__VA_ARGS__},                                  \
	.n_evidence = sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)
#define ALL_RUNNING "all 6 Exchange services running; CORP\\exsvc holds every required right"

/* Three waves and two hosts without one; every status, NEVER_SEEN and
 * OFFLINE; listed out of order, since the report sorts. */
static const struct report_host fleet[] = {
	{.host_id = "EXCH020", .wave = "10", .site = "Paris", .status = "AT_RISK",
	 .connectivity = "ONLINE", .planned_date = "2026-12-13",
	 EV("MSExchangeSA, MSExchangeDS, MSExchangeIS, MSExchangeMTA, MSExchangeIMC, "
			"MSExchangeES log on as local account .\\exsvc: promotion will delete it")},
	{.host_id = "EXCH010", .wave = "2", .site = "London", .status = "AFFECTED",
	 .connectivity = "ONLINE", .planned_date = "2026-12-06", .promoted_at_ms = WAVE2,
	 .detected_at_ms = WAVE2 + S(120),
	 EV("MSExchangeIS stopped: 1069 The service did not start due to a logon "
			"failure. (since 2026-12-06T10:02:00Z)",
			"14 x MSExchangePOP3/13003 since promotion at 2026-12-06T10:00:00Z",
			"CORP\\exsvc lacks SeTcbPrivilege, SeRestorePrivilege")},
	{.host_id = "EXCH001", .wave = "1", .site = "London", .status = "HEALTHY",
	 .connectivity = "ONLINE", .planned_date = "2026-11-29", .promoted_at_ms = WAVE1,
	 EV(ALL_RUNNING)},
	{.host_id = "EXCH002", .wave = "1", .site = "London", .status = "REPAIRED",
	 .connectivity = "ONLINE", .planned_date = "2026-11-29", .promoted_at_ms = WAVE1 + S(600),
	 .detected_at_ms = WAVE1 + S(900), .repaired_at_ms = WAVE1 + S(8100),
	 EV("repaired at 2026-11-29T12:15:00Z; no problem since")},
	{.host_id = "EXCH004", .wave = "1", .site = "London", .status = "NEEDS_SP_REINSTALL",
	 .connectivity = "ONLINE", .planned_date = "2026-11-29", .promoted_at_ms = WAVE1 + S(1800),
	 .detected_at_ms = WAVE1 + S(5400),
	 EV("12 x MSExchangePOP3/13003 since the repair at 2026-11-29T13:00:00Z: "
			"reinstall the service pack",
			"the agent reports Exchange 5.5 SP3 needs its service pack reapplied")},
	{.host_id = "EXCH003", .wave = "1", .site = "London", .status = "REPAIRED",
	 .connectivity = "ONLINE", .planned_date = "2026-11-29", .promoted_at_ms = WAVE1 + S(1200),
	 .detected_at_ms = WAVE1 + S(2100), .repaired_at_ms = WAVE1 + S(16500),
	 EV("repaired at 2026-11-29T14:35:00Z; no problem since")},
	{.host_id = "EXCH005", .wave = "1", .site = "Paris", .status = "HEALTHY",
	 .connectivity = "OFFLINE", .planned_date = "2026-11-29", .promoted_at_ms = WAVE1 + S(2400),
	 EV(ALL_RUNNING)},
	{.host_id = "LAB01", .site = "Lab", .status = "HEALTHY", .connectivity = "OFFLINE",
	 EV(ALL_RUNNING)},
	{.host_id = "EXCH011", .wave = "2", .site = "New York", .status = "REPAIRING",
	 .connectivity = "ONLINE", .planned_date = "2026-12-06", .promoted_at_ms = WAVE2 + S(300),
	 .detected_at_ms = WAVE2 + S(480),
	 EV("repair command 7f3c9a12 in flight")},
	{.host_id = "EXCH012", .wave = "2", .site = "R&D", .status = "DEGRADED",
	 .connectivity = "ONLINE", .planned_date = "2026-12-06", .promoted_at_ms = WAVE2 + S(600),
	 EV("MSExchangeIMC is stopped")},
	{.host_id = "EXCH013", .wave = "2", .site = "New York", .status = "HEALTHY",
	 .connectivity = "ONLINE", .planned_date = "2026-12-06", EV(ALL_RUNNING)},
	{.host_id = "EXCH014", .wave = "2", .site = "New York", .connectivity = "NEVER_SEEN",
	 .planned_date = "2026-12-07"},
	{.host_id = "EXCH021", .wave = "10", .site = "Paris", .status = "AT_RISK",
	 .connectivity = "OFFLINE", .planned_date = "2026-12-13",
	 EV("CORP\\exsvc lacks SeTcbPrivilege")},
	{.host_id = "EXCH022", .wave = "10", .site = "Paris", .status = "HEALTHY",
	 .connectivity = "ONLINE", EV(ALL_RUNNING)},
	{.host_id = "EXCH099", .site = "London", .status = "REPAIRED", .connectivity = "ONLINE",
	 .promoted_at_ms = EARLY, .detected_at_ms = EARLY + S(3600),
	 .repaired_at_ms = EARLY + S(5400),
	 EV("repaired at 2026-11-20T10:30:00Z; no problem since")},
};

#define N_FLEET (sizeof(fleet) / sizeof(fleet[0]))

static struct report *build(const struct report_host *hosts, size_t n, const char *only)
{
	struct report *r;
	char err[256];
	int rc = report_build(hosts, n, only, GENERATED, &r, err, sizeof(err));
	if (rc)
		print_message("report_build: %s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(r);
	return r;
}

static void expect_states(const struct report_wave *w, size_t healthy, size_t repaired,
			  size_t degraded, size_t at_risk, size_t affected, size_t needs_sp,
			  size_t repairing, size_t never_seen)
{
	assert_int_equal(w->states[HOST_HEALTHY], healthy);
	assert_int_equal(w->states[HOST_REPAIRED], repaired);
	assert_int_equal(w->states[HOST_DEGRADED], degraded);
	assert_int_equal(w->states[HOST_AT_RISK], at_risk);
	assert_int_equal(w->states[HOST_AFFECTED], affected);
	assert_int_equal(w->states[HOST_NEEDS_SP_REINSTALL], needs_sp);
	assert_int_equal(w->states[HOST_REPAIRING], repairing);
	assert_int_equal(w->states[REPORT_NEVER_SEEN], never_seen);
}

static void expect_duration(const struct report_duration *d, size_t hosts, int64_t median_s,
			    int64_t p90_s)
{
	assert_int_equal(d->hosts, hosts);
	if (hosts) {
		assert_int_equal(d->median_ms, S(median_s));
		assert_int_equal(d->p90_ms, S(p90_s));
	}
}

static void expect_attention(const struct report_wave *w, size_t i, const char *host, int state,
			     int connectivity)
{
	assert_true(i < w->n_attention);
	assert_string_equal(w->attention[i].host_id, host);
	assert_int_equal(w->attention[i].state, state);
	assert_int_equal(w->attention[i].connectivity, connectivity);
}

static void test_fleet_numbers(void **state)
{
	struct report *r = build(fleet, N_FLEET, NULL);
	assert_int_equal(r->n_waves, 4);
	assert_string_equal(r->waves[0].name, "1");
	assert_string_equal(r->waves[1].name, "2");
	assert_string_equal(r->waves[2].name, "10");
	assert_string_equal(r->waves[3].name, "(none)");
	assert_true(r->waves[3].no_wave);

	const struct report_wave *w = &r->waves[0];
	assert_int_equal(w->hosts, 5);
	assert_int_equal(w->promoted, 5);
	assert_int_equal(w->done, 4);
	assert_int_equal(w->done_permille, 800);
	assert_int_equal(w->offline, 1);
	expect_states(w, 2, 2, 0, 0, 0, 1, 0, 0);
	/* 300 s, 900 s, 3600 s: nearest rank 2 of 3 and 3 of 3. */
	expect_duration(&w->detect, 3, 900, 3600);
	/* 7200 s, 14400 s: rank 1 and 2 of 2. */
	expect_duration(&w->repair, 2, 7200, 14400);
	assert_string_equal(w->planned_first, "2026-11-29");
	assert_string_equal(w->planned_last, "2026-11-29");
	assert_int_equal(w->n_attention, 2);
	expect_attention(w, 0, "EXCH004", HOST_NEEDS_SP_REINSTALL, CONN_ONLINE);
	expect_attention(w, 1, "EXCH005", HOST_HEALTHY, CONN_OFFLINE);
	assert_int_equal(w->attention[0].n_evidence, 2);
	assert_string_equal(w->attention[0].site, "London");

	w = &r->waves[1];
	assert_int_equal(w->hosts, 5);
	assert_int_equal(w->promoted, 3);
	assert_int_equal(w->done, 0);
	assert_int_equal(w->done_permille, 0);
	assert_int_equal(w->offline, 0);
	expect_states(w, 1, 0, 1, 0, 1, 0, 1, 1);
	expect_duration(&w->detect, 2, 120, 180);
	expect_duration(&w->repair, 0, 0, 0);
	assert_string_equal(w->planned_first, "2026-12-06");
	assert_string_equal(w->planned_last, "2026-12-07");
	assert_int_equal(w->n_attention, 4);
	expect_attention(w, 0, "EXCH010", HOST_AFFECTED, CONN_ONLINE);
	expect_attention(w, 1, "EXCH012", HOST_DEGRADED, CONN_ONLINE);
	expect_attention(w, 2, "EXCH011", HOST_REPAIRING, CONN_ONLINE);
	expect_attention(w, 3, "EXCH014", REPORT_NEVER_SEEN, CONN_NEVER_SEEN);

	w = &r->waves[2];
	assert_int_equal(w->hosts, 3);
	assert_int_equal(w->promoted, 0);
	assert_int_equal(w->done_permille, 0);
	assert_int_equal(w->offline, 1);
	expect_states(w, 1, 0, 0, 2, 0, 0, 0, 0);
	expect_duration(&w->detect, 0, 0, 0);
	assert_string_equal(w->planned_first, "2026-12-13");
	assert_int_equal(w->n_attention, 2);
	expect_attention(w, 0, "EXCH020", HOST_AT_RISK, CONN_ONLINE);
	expect_attention(w, 1, "EXCH021", HOST_AT_RISK, CONN_OFFLINE);

	/* Without a wave, an offline host is no one's concern. */
	w = &r->waves[3];
	assert_int_equal(w->hosts, 2);
	assert_int_equal(w->promoted, 1);
	assert_int_equal(w->done, 1);
	assert_int_equal(w->done_permille, 500);
	assert_int_equal(w->n_attention, 0);
	expect_duration(&w->detect, 1, 3600, 3600);
	expect_duration(&w->repair, 1, 1800, 1800);
	assert_string_equal(w->planned_first, "");

	w = &r->total;
	assert_int_equal(w->hosts, 15);
	assert_int_equal(w->promoted, 9);
	assert_int_equal(w->done, 5);
	assert_int_equal(w->done_permille, 333);
	assert_int_equal(w->offline, 3);
	expect_states(w, 5, 3, 1, 2, 1, 1, 1, 1);
	/* 120 180 300 900 3600 3600: rank 3 and 6 of 6. */
	expect_duration(&w->detect, 6, 300, 3600);
	/* 1800 7200 14400: rank 2 and 3 of 3. */
	expect_duration(&w->repair, 3, 7200, 14400);
	assert_int_equal(w->n_attention, 0);
	report_free(r);
}

static void test_only_wave(void **state)
{
	struct report *r = build(fleet, N_FLEET, "2");
	assert_int_equal(r->n_waves, 1);
	assert_string_equal(r->waves[0].name, "2");
	assert_int_equal(r->total.hosts, 5);
	assert_int_equal(r->total.promoted, 3);
	assert_string_equal(r->only_wave, "2");
	report_free(r);

	r = build(fleet, N_FLEET, "(none)");
	assert_int_equal(r->n_waves, 1);
	assert_true(r->waves[0].no_wave);
	assert_int_equal(r->total.hosts, 2);
	report_free(r);

	r = build(fleet, N_FLEET, "7");
	assert_int_equal(r->n_waves, 0);
	assert_int_equal(r->total.hosts, 0);
	assert_int_equal(r->total.done_permille, -1);
	report_free(r);
}

static void test_natural_order(void **state)
{
	static const struct report_host hosts[] = {
		{.host_id = "A", .wave = "wave 10", .status = "HEALTHY"},
		{.host_id = "B", .wave = "Wave 2", .status = "HEALTHY"},
		{.host_id = "C", .status = "HEALTHY"},
		{.host_id = "D", .wave = "10", .status = "HEALTHY"},
		{.host_id = "E", .wave = "9", .status = "HEALTHY"},
		{.host_id = "F", .wave = "010", .status = "HEALTHY"},
		{.host_id = "G", .wave = "Pilot", .status = "HEALTHY"},
		{.host_id = "H", .wave = "", .status = "HEALTHY"},
		{.host_id = "I", .wave = "Wave 2", .status = "HEALTHY"},
	};
	static const char *const want[] = {"9", "010", "10", "Pilot", "Wave 2", "wave 10", "(none)"};
	struct report *r = build(hosts, sizeof(hosts) / sizeof(hosts[0]), NULL);
	assert_int_equal(r->n_waves, 7);
	for (size_t i = 0; i < 7; i++)
		assert_string_equal(r->waves[i].name, want[i]);
	assert_int_equal(r->waves[4].hosts, 2);
	assert_int_equal(r->waves[6].hosts, 2);
	report_free(r);
}

static void test_durations(void **state)
{
	/* Ten hosts detected 1..10 minutes after promotion: median 5 min,
	 * p90 9 min by nearest rank; and a host whose detection predates its
	 * promotion (clock trouble) is left out rather than counted as 0. */
	struct report_host hosts[11];
	char names[11][8];
	memset(hosts, 0, sizeof(hosts));
	for (int i = 0; i < 11; i++) {
		snprintf(names[i], sizeof(names[i]), "H%02d", i);
		hosts[i].host_id = names[i];
		hosts[i].wave = "1";
		hosts[i].status = "AFFECTED";
		hosts[i].promoted_at_ms = WAVE1;
		hosts[i].detected_at_ms = WAVE1 + S(60 * (i + 1));
	}
	hosts[10].detected_at_ms = WAVE1 - S(5);
	hosts[10].repaired_at_ms = WAVE1 + S(60);
	struct report *r = build(hosts, 11, NULL);
	expect_duration(&r->waves[0].detect, 10, 300, 540);
	expect_duration(&r->waves[0].repair, 1, 65, 65);
	assert_int_equal(r->waves[0].promoted, 11);
	assert_int_equal(r->waves[0].done, 0);
	report_free(r);
}

static void test_bad_names(void **state)
{
	struct report *r = (struct report *)1;
	char err[256];
	struct report_host h = {.host_id = "EXCH001", .status = "BROKEN"};
	assert_int_equal(report_build(&h, 1, NULL, GENERATED, &r, err, sizeof(err)), UV_EINVAL);
	assert_null(r);
	assert_string_equal(err, "host EXCH001: status 'BROKEN' is not known");
	h.status = "healthy"; /* names are read without case, as status.h does */
	h.connectivity = "GONE";
	assert_int_equal(report_build(&h, 1, NULL, GENERATED, &r, err, sizeof(err)), UV_EINVAL);
	assert_string_equal(err, "host EXCH001: connectivity 'GONE' is not known");
	h.host_id = NULL;
	assert_int_equal(report_build(&h, 1, NULL, GENERATED, &r, err, sizeof(err)), UV_EINVAL);
	assert_string_equal(err, "host 1 of the report has no host id");
}

static void test_never_seen(void **state)
{
	/* A status without a connection still counts as never seen. */
	static const struct report_host hosts[] = {
		{.host_id = "A", .wave = "1", .status = "HEALTHY", .connectivity = "NEVER_SEEN",
		 .promoted_at_ms = WAVE1},
		{.host_id = "B", .wave = "1"},
	};
	struct report *r = build(hosts, 2, NULL);
	assert_int_equal(r->waves[0].states[REPORT_NEVER_SEEN], 2);
	assert_int_equal(r->waves[0].done, 0);
	assert_int_equal(r->waves[0].n_attention, 2);
	assert_int_equal(r->waves[0].attention[1].connectivity, CONN_NEVER_SEEN);
	report_free(r);
}

/* The output of format f as a heap string. */
static char *render(const struct report *r, enum report_format f, size_t *len)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&buf, &size);
	assert_non_null(out);
	assert_int_equal(report_write(r, f, out), 0);
	assert_int_equal(fclose(out), 0);
	*len = size;
	return buf;
}

static void test_hostile_strings(void **state)
{
	/* What agents and event logs send is data, never markup, escapes or
	 * formulas. */
	const struct report_host hosts[] = {
		{.host_id = "EXCH001", .wave = "=HYPERLINK(\"x\"),1", .site = "<b>R&D</b>",
		 .status = "AFFECTED",
		 EV("<script>alert('x')</script>", "bell\a esc\x1b[31m tab\there",
				"bad \xC3\x28 utf8 \xED\xA0\x80 end", "caf\xC3\xA9 \xE2\x9C\x93")},
	};
	struct report *r = build(hosts, 1, NULL);
	const struct report_attention *a = &r->waves[0].attention[0];
	assert_string_equal(a->evidence[1], "bell\xEF\xBF\xBD esc\xEF\xBF\xBD[31m tab here");
	assert_string_equal(a->evidence[2],
			    "bad \xEF\xBF\xBD( utf8 \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD end");
	assert_string_equal(a->evidence[3], "caf\xC3\xA9 \xE2\x9C\x93");

	size_t len;
	char *html = render(r, REPORT_HTML, &len);
	assert_null(strstr(html, "<script"));
	assert_null(strstr(html, "<b>"));
	assert_non_null(strstr(html, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
	assert_non_null(strstr(html, "&lt;b&gt;R&amp;D&lt;/b&gt;"));
	assert_non_null(strstr(html, "=HYPERLINK(&quot;x&quot;),1"));
	free(html);

	char *csv = render(r, REPORT_CSV, &len);
	assert_non_null(strstr(csv, "\r\n\"'=HYPERLINK(\"\"x\"\"),1\","));
	free(csv);

	char *table = render(r, REPORT_TABLE, &len);
	assert_null(memchr(table, '\x1b', len));
	assert_null(memchr(table, '\a', len));
	free(table);

	char *text = render(r, REPORT_JSON, &len);
	json_error_t jerr;
	json_t *root = json_loadb(text, len, 0, &jerr);
	assert_non_null(root);
	json_t *ev = json_object_get(json_array_get(json_object_get(json_array_get(
					     json_object_get(root, "waves"), 0), "attention"), 0),
				     "evidence");
	assert_string_equal(json_string_value(json_array_get(ev, 0)), "<script>alert('x')</script>");
	json_decref(root);
	free(text);
	report_free(r);
}

static void test_long_wave_name(void **state)
{
	/* The chart has room for 20 characters beside its bars; the tables and
	 * the other formats keep the whole name. */
	static const struct report_host hosts[] = {
		{.host_id = "EXCH001", .wave = "Pilot wave for the London data centre",
		 .status = "HEALTHY"},
	};
	struct report *r = build(hosts, 1, NULL);
	size_t len;
	char *html = render(r, REPORT_HTML, &len);
	assert_non_null(strstr(html, ">Pilot wave for the \xE2\x80\xA6</text>"));
	assert_non_null(strstr(html, "<tr><td>Pilot wave for the London data centre</td>"));
	free(html);
	report_free(r);
}

static void test_empty_report(void **state)
{
	/* No host at all: every format still says so, without a division. */
	struct report *r = build(NULL, 0, NULL);
	for (int f = REPORT_TABLE; f <= REPORT_HTML; f++) {
		size_t len;
		char *text = render(r, (enum report_format)f, &len);
		assert_true(len > 0);
		free(text);
	}
	report_free(r);
}

static void test_format_names(void **state)
{
	assert_int_equal(report_format_parse("table"), REPORT_TABLE);
	assert_int_equal(report_format_parse("CSV"), REPORT_CSV);
	assert_int_equal(report_format_parse("json"), REPORT_JSON);
	assert_int_equal(report_format_parse("html"), REPORT_HTML);
	assert_int_equal(report_format_parse("pdf"), -1);
	assert_int_equal(report_format_parse(NULL), -1);
}

static void test_write_error(void **state)
{
	/* A full disk must not look like a report written. */
	FILE *full = fopen("/dev/full", "w");
	if (!full)
		skip();
	struct report *r = build(fleet, N_FLEET, NULL);
	assert_int_equal(report_write(r, REPORT_HTML, full), UV_EIO);
	fclose(full);
	report_free(r);
}

/* ---- golden files ---- */

static const char *golden_dir(void)
{
	const char *dir = getenv("EXFLEET_GOLDEN_DIR");
	if (dir && dir[0])
		return dir;
#ifdef EXFLEET_SOURCE_DIR
	return EXFLEET_SOURCE_DIR "/tests/golden";
#else
	return NULL;
#endif
}

static void check_golden(enum report_format f, const char *file)
{
	const char *dir = golden_dir();
	char path[1024], err[512];
	size_t len, want_len;
	char *want = NULL;

	if (!dir)
		fail_msg("set EXFLEET_GOLDEN_DIR to the tests/golden directory");
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	struct report *r = build(fleet, N_FLEET, NULL);
	char *got = render(r, f, &len);
	report_free(r);

	if (getenv("EXFLEET_UPDATE_GOLDEN")) {
		assert_int_equal(util_write_file_atomic(path, got, len, 0644, err, sizeof(err)), 0);
		print_message("wrote %s\n", path);
		free(got);
		return;
	}
	if (util_read_file(path, 1 << 20, &want, &want_len, err, sizeof(err)) < 0) {
		free(got);
		fail_msg("%s (EXFLEET_UPDATE_GOLDEN=1 writes it)", err);
	}
	if (len != want_len || memcmp(got, want, len) != 0) {
		/* Show where they part, by line, so the change can be judged. */
		size_t i = 0, line = 1, bol = 0;
		while (i < len && i < want_len && got[i] == want[i]) {
			if (got[i] == '\n') {
				line++;
				bol = i + 1;
			}
			i++;
		}
		size_t we = bol, ge = bol;
		while (we < want_len && want[we] != '\n')
			we++;
		while (ge < len && got[ge] != '\n')
			ge++;
		print_message("%s differs from line %zu:\n  want: %.*s\n  got:  %.*s\n", path, line,
			      (int)(we - bol), want + bol, (int)(ge - bol), got + bol);
	}
	assert_int_equal(len, want_len);
	assert_memory_equal(got, want, len);
	free(got);
	free(want);
}

static void test_golden_table(void **state)
{
	check_golden(REPORT_TABLE, "report.txt");
}

static void test_golden_csv(void **state)
{
	check_golden(REPORT_CSV, "report.csv");
}

static void test_golden_json(void **state)
{
	check_golden(REPORT_JSON, "report.json");
}

static void test_golden_html(void **state)
{
	check_golden(REPORT_HTML, "report.html");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fleet_numbers),
		cmocka_unit_test(test_only_wave),
		cmocka_unit_test(test_natural_order),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_bad_names),
		cmocka_unit_test(test_never_seen),
		cmocka_unit_test(test_hostile_strings),
		cmocka_unit_test(test_long_wave_name),
		cmocka_unit_test(test_empty_report),
		cmocka_unit_test(test_format_names),
		cmocka_unit_test(test_write_error),
		cmocka_unit_test(test_golden_table),
		cmocka_unit_test(test_golden_csv),
		cmocka_unit_test(test_golden_json),
		cmocka_unit_test(test_golden_html),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
