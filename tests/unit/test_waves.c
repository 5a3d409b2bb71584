/* Wave plan CSV: what a spreadsheet saves is read, and every mistake in it is
 * named with its line, all at once, with nothing imported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "waves.h"

struct parsed {
	int rc;
	struct wave_plan plan;
	struct wave_errors errors;
};

static void parse(struct parsed *p, const char *text)
{
	p->rc = waves_parse("waves.csv", text, strlen(text), &p->plan, &p->errors);
}

static void parsed_free(struct parsed *p)
{
	wave_plan_free(&p->plan);
	wave_errors_free(&p->errors);
}

static void dump_errors(const struct parsed *p)
{
	for (size_t i = 0; i < p->errors.count; i++)
		print_message("  %s\n", p->errors.lines[i]);
}

/* The plan must fail with exactly this one message and return nothing. */
static void expect_one_error(const char *text, const char *message)
{
	struct parsed p;
	parse(&p, text);
	if (p.errors.count != 1 || strcmp(p.errors.lines[0], message) != 0) {
		print_message("input:\n%s\nwant: %s\ngot %zu:\n", text, message, p.errors.count);
		dump_errors(&p);
	}
	assert_int_equal(p.rc, UV_EINVAL);
	assert_int_equal(p.errors.count, 1);
	assert_int_equal(p.errors.total, 1);
	assert_string_equal(p.errors.lines[0], message);
	assert_null(p.plan.entries);
	assert_int_equal(p.plan.count, 0);
	parsed_free(&p);
}

static void expect_entry(const struct wave_entry *e, const char *host, const char *wave,
			 const char *date, unsigned line)
{
	assert_string_equal(e->host_id, host);
	assert_string_equal(e->wave, wave);
	assert_string_equal(e->planned_date, date);
	assert_int_equal(e->line, line);
}

static void test_good_plan(void **state)
{
	/* Excel's "CSV UTF-8": BOM, CRLF; columns moved, names capitalised,
	 * quoted fields, blanks, empty rows written as commas. */
	static const char text[] = "\xEF\xBB\xBF"
				   "Wave, HOST ,Planned_Date\r\n"
				   "1,EXCH001,2026-11-29\r\n"
				   "\r\n"
				   "\"Wave 2\",\"EXCH002\",\r\n"
				   " 1 , exch-003.corp ,  2026-11-30 \r\n"
				   ",,\r\n"
				   "\" 10 \",EXCH_004,\"2028-02-29\"\r\n";
	struct parsed p;
	parse(&p, text);
	dump_errors(&p);
	assert_int_equal(p.rc, 0);
	assert_int_equal(p.errors.count, 0);
	assert_int_equal(p.errors.total, 0);
	assert_int_equal(p.plan.count, 4);
	expect_entry(&p.plan.entries[0], "EXCH001", "1", "2026-11-29", 2);
	expect_entry(&p.plan.entries[1], "EXCH002", "Wave 2", "", 4);
	expect_entry(&p.plan.entries[2], "exch-003.corp", "1", "2026-11-30", 5);
	expect_entry(&p.plan.entries[3], "EXCH_004", "10", "2028-02-29", 7);
	parsed_free(&p);
}

static void test_line_ends(void **state)
{
	/* LF, old Mac CR, no final line end: the same plan. */
	static const char *const texts[] = {
		"host,wave,planned_date\nEXCH001,1,2026-11-29\nEXCH002,1,\n",
		"host,wave,planned_date\rEXCH001,1,2026-11-29\rEXCH002,1,",
		"host,wave,planned_date\r\nEXCH001,1,2026-11-29\r\nEXCH002,1,",
	};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct parsed p;
		parse(&p, texts[i]);
		assert_int_equal(p.rc, 0);
		assert_int_equal(p.plan.count, 2);
		expect_entry(&p.plan.entries[0], "EXCH001", "1", "2026-11-29", 2);
		expect_entry(&p.plan.entries[1], "EXCH002", "1", "", 3);
		parsed_free(&p);
	}
}

static void test_length_not_text_end(void **state)
{
	/* Only len bytes count: the caller's buffer need not end in NUL. */
	static const char text[] = "host,wave,planned_date\nEXCH001,1,\nEXCH002,1,2026-99-99\n";
	size_t len = strlen("host,wave,planned_date\nEXCH001,1,\n");
	struct wave_plan plan;
	struct wave_errors errors;
	assert_int_equal(waves_parse("w.csv", text, len, &plan, &errors), 0);
	assert_int_equal(plan.count, 1);
	wave_plan_free(&plan);
	wave_errors_free(&errors);
}

static void test_calendar(void **state)
{
	static const char *const good[] = {"2000-02-29", "2028-02-29", "2026-12-31", "2026-04-30",
					   "0001-01-01"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char text[128];
		snprintf(text, sizeof(text), "host,wave,planned_date\nEXCH001,1,%s\n", good[i]);
		struct parsed p;
		parse(&p, text);
		assert_int_equal(p.rc, 0);
		assert_string_equal(p.plan.entries[0].planned_date, good[i]);
		parsed_free(&p);
	}
	expect_one_error("host,wave,planned_date\nEXCH001,1,2026-02-30\n",
			 "waves.csv:2: planned_date: '2026-02-30' is not a date (February 2026 "
			 "has 28 days)");
	expect_one_error("host,wave,planned_date\nEXCH001,1,2100-02-29\n",
			 "waves.csv:2: planned_date: '2100-02-29' is not a date (February 2100 "
			 "has 28 days)");
	expect_one_error("host,wave,planned_date\nEXCH001,1,2026-04-31\n",
			 "waves.csv:2: planned_date: '2026-04-31' is not a date (April 2026 has "
			 "30 days)");
}

struct bad_case {
	const char *text;
	const char *message;
};

#define H "host,wave,planned_date\n"
#define LONG65 "A123456789012345678901234567890123456789012345678901234567890123X"

static const struct bad_case bad_lines[] = {
	{H "EXCH001,1,2026-13-01\n", "waves.csv:2: planned_date: '2026-13-01' is not a date (YYYY-MM-DD)"},
	{H "EXCH001,1,3/1/2026\n", "waves.csv:2: planned_date: '3/1/2026' is not a date (YYYY-MM-DD)"},
	{H "EXCH001,1,2026-1-01\n", "waves.csv:2: planned_date: '2026-1-01' is not a date (YYYY-MM-DD)"},
	{H "EXCH001,1,2026-00-10\n", "waves.csv:2: planned_date: '2026-00-10' is not a date (YYYY-MM-DD)"},
	{H "EXCH001,1,2026-01-00\n", "waves.csv:2: planned_date: '2026-01-00' is not a date (YYYY-MM-DD)"},
	{H "EXCH001,1,0000-01-01\n", "waves.csv:2: planned_date: '0000-01-01' is not a date (YYYY-MM-DD)"},
	{H ",1,\n", "waves.csv:2: host: empty; every line needs a host id"},
	{H LONG65 ",1,\n",
	 "waves.csv:2: host: 'A123456789012345678901234567890123456789...' is longer than 64 "
	 "characters"},
	{H "EXCH 001,1,\n",
	 "waves.csv:2: host: 'EXCH 001' has ' ', which a host id cannot hold (letters, digits, "
	 "'.', '_', '-')"},
	{H "EXCH\xC3\x84,1,\n",
	 "waves.csv:2: host: 'EXCH\\xC3\\x84' has '\\xC3', which a host id cannot hold (letters, "
	 "digits, '.', '_', '-')"},
	{H "-EXCH001,1,\n", "waves.csv:2: host: '-EXCH001' must not start with '.' or '-'"},
	{H ".EXCH001,1,\n", "waves.csv:2: host: '.EXCH001' must not start with '.' or '-'"},
	{H "EXCH001,,\n", "waves.csv:2: wave: empty; every host needs a wave"},
	{H "EXCH001,\"   \",\n", "waves.csv:2: wave: empty; every host needs a wave"},
	{H "EXCH001,Wave 1/2,\n",
	 "waves.csv:2: wave: 'Wave 1/2' has '/', which a wave name cannot hold (letters, digits, "
	 "space, '.', '_', '-')"},
	{H "EXCH001,123456789012345678901234567890123,\n",
	 "waves.csv:2: wave: '123456789012345678901234567890123' is longer than 32 characters"},
	{H "EXCH001,1\n", "waves.csv:2: 2 fields, but the header has 3: host,wave,planned_date"},
	{"wave,planned_date,host\nEXCH001,1,2026-11-29,x\n",
	 "waves.csv:2: 4 fields, but the header has 3: wave,planned_date,host"},
	{H "EXCH001,\"1,2026-11-29\n",
	 "waves.csv:2: wave: the quoted field is not closed (a field cannot hold a line break)"},
	{H "EXCH001,\"1\"x,\n",
	 "waves.csv:2: wave: text after the closing quote; inside quotes, write a quote as \"\""},
	{H "EXCH001,1 \"a\",\n",
	 "waves.csv:2: wave: a quote inside an unquoted field; put the field in quotes and write "
	 "the quote as \"\""},
	{H "\"EXCH\"\"01\",1,\n",
	 "waves.csv:2: host: 'EXCH\"01' has '\"', which a host id cannot hold (letters, digits, "
	 "'.', '_', '-')"},
	{H "EXCH001,2,\nEXCH002,1,\nEXCH001,1,\n",
	 "waves.csv:4: host EXCH001 is already in wave 2 (line 2)"},
	{H "EXCH001,Wave 2,\n\nexch001,1,\n",
	 "waves.csv:4: host exch001 is already in wave Wave 2 as EXCH001 (line 2)"},
};

static void test_bad_lines(void **state)
{
	for (size_t i = 0; i < sizeof(bad_lines) / sizeof(bad_lines[0]); i++)
		expect_one_error(bad_lines[i].text, bad_lines[i].message);
}

static void test_duplicate_of_bad_line(void **state)
{
	/* A host whose first line is wrong is still known, so its second
	 * listing is reported too. */
	struct parsed p;
	parse(&p, H "EXCH001,a/b,\nEXCH001,1,\n");
	assert_int_equal(p.rc, UV_EINVAL);
	assert_int_equal(p.errors.count, 2);
	assert_string_equal(p.errors.lines[1], "waves.csv:3: host EXCH001 is already listed (line 2)");
	parsed_free(&p);
}

static void test_bad_header(void **state)
{
	expect_one_error("host,wave,planned_date,site,notes\nEXCH001,1,,LON,x\n",
			 "waves.csv:1: unknown columns 'site' (column 4), 'notes' (column 5): "
			 "the columns are host, wave and planned_date");
	expect_one_error("host,wave\nEXCH001,1\n",
			 "waves.csv:1: missing column planned_date: the header must name host, "
			 "wave and planned_date");
	expect_one_error("host,wave,HOST,planned_date\n",
			 "waves.csv:1: column host appears twice (columns 1 and 3)");
	expect_one_error("host;wave;planned_date\nEXCH001;1;\n",
			 "waves.csv:1: the columns are separated by ';'; save the file with ',' "
			 "between them (in Excel: CSV UTF-8)");
	expect_one_error("EXCH001,1,2026-11-29\n",
			 "waves.csv:1: the first line must be the header host,wave,planned_date "
			 "(in any order), not a line starting 'EXCH001'");
	expect_one_error("", "waves.csv: empty; the first line must be the header "
			     "host,wave,planned_date");
	expect_one_error("\xEF\xBB\xBF\r\n\r\n", "waves.csv: empty; the first line must be the "
						 "header host,wave,planned_date");
	expect_one_error("host,wave,planned_date\r\n", "waves.csv: no hosts under the header");
	expect_one_error("\xFF\xFEh\0o\0", "waves.csv: UTF-16 text; save the plan as CSV UTF-8 "
					   "(comma delimited)");
}

static void test_nul_byte(void **state)
{
	static const char text[] = "host,wave,planned_date\nEXCH\0001,1,\nEXCH002,1,\n";
	struct wave_plan plan;
	struct wave_errors errors;
	assert_int_equal(waves_parse("w.csv", text, sizeof(text) - 1, &plan, &errors), UV_EINVAL);
	assert_int_equal(errors.count, 1);
	assert_string_equal(errors.lines[0],
			    "w.csv:2: holds a NUL byte; save the plan as CSV UTF-8 (comma delimited)");
	assert_null(plan.entries);
	wave_plan_free(&plan);
	wave_errors_free(&errors);
}

static void test_every_bad_line_reported(void **state)
{
	/* Good lines among bad ones: every bad one, in order, and no entries. */
	static const char text[] = "host,wave,planned_date\n"
				   "EXCH001,1,2026-11-29\n"
				   "EXCH002,1,2026-02-30\n"
				   "EXCH003,1,2026-11-29\n"
				   "\n"
				   "EXCH 004,1,\n"
				   "EXCH005,,nope\n"
				   "EXCH001,3,\n"
				   "EXCH006,2,2026-12-06\n";
	struct parsed p;
	parse(&p, text);
	assert_int_equal(p.rc, UV_EINVAL);
	assert_null(p.plan.entries);
	assert_int_equal(p.plan.count, 0);
	assert_int_equal(p.errors.total, 5);
	assert_int_equal(p.errors.count, 5);
	assert_string_equal(p.errors.lines[0],
			    "waves.csv:3: planned_date: '2026-02-30' is not a date (February 2026 has 28 days)");
	assert_string_equal(p.errors.lines[1],
			    "waves.csv:6: host: 'EXCH 004' has ' ', which a host id cannot hold "
			    "(letters, digits, '.', '_', '-')");
	assert_string_equal(p.errors.lines[2], "waves.csv:7: wave: empty; every host needs a wave");
	assert_string_equal(p.errors.lines[3],
			    "waves.csv:7: planned_date: 'nope' is not a date (YYYY-MM-DD)");
	assert_string_equal(p.errors.lines[4],
			    "waves.csv:8: host EXCH001 is already in wave 1 (line 2)");
	parsed_free(&p);
}

/* A plan of n hosts, line i bad when bad(i). */
static char *make_plan(size_t n, int every_bad, size_t *len)
{
	size_t cap = 32 + n * 32, used = 0;
	char *text = malloc(cap);
	assert_non_null(text);
	used += (size_t)snprintf(text, cap, "host,wave,planned_date\n");
	for (size_t i = 0; i < n; i++)
		used += (size_t)snprintf(text + used, cap - used, "EXCH%06zu,%zu,%s\n", i, i % 7 + 1,
					 every_bad ? "2026-02-30" : "2026-11-29");
	*len = used;
	return text;
}

static void test_error_cap(void **state)
{
	size_t len;
	char *text = make_plan(150, 1, &len);
	struct wave_plan plan;
	struct wave_errors errors;
	assert_int_equal(waves_parse("big.csv", text, len, &plan, &errors), UV_EINVAL);
	assert_int_equal(errors.total, 150);
	assert_int_equal(errors.count, WAVES_MAX_ERRORS + 1);
	assert_string_equal(errors.lines[0], "big.csv:2: planned_date: '2026-02-30' is not a date "
					     "(February 2026 has 28 days)");
	assert_string_equal(errors.lines[WAVES_MAX_ERRORS - 1],
			    "big.csv:101: planned_date: '2026-02-30' is not a date (February 2026 "
			    "has 28 days)");
	assert_string_equal(errors.lines[WAVES_MAX_ERRORS], "big.csv: ... and 50 more errors");
	wave_plan_free(&plan);
	wave_errors_free(&errors);
	free(text);
}

static void test_line_limit(void **state)
{
	size_t len;
	/* The header and WAVES_MAX_LINES - 1 hosts: at the limit, accepted. */
	char *text = make_plan(WAVES_MAX_LINES - 1, 0, &len);
	struct wave_plan plan;
	struct wave_errors errors;
	assert_int_equal(waves_parse("big.csv", text, len, &plan, &errors), 0);
	assert_int_equal(plan.count, WAVES_MAX_LINES - 1);
	expect_entry(&plan.entries[WAVES_MAX_LINES - 2], "EXCH099998", "4", "2026-11-29",
		     WAVES_MAX_LINES);
	wave_plan_free(&plan);
	wave_errors_free(&errors);
	free(text);

	/* One more line: refused, before the hosts in it are looked at. */
	text = make_plan(WAVES_MAX_LINES, 0, &len);
	assert_int_equal(waves_parse("big.csv", text, len, &plan, &errors), UV_E2BIG);
	assert_int_equal(plan.count, 0);
	assert_null(plan.entries);
	assert_int_equal(errors.count, 1);
	assert_string_equal(errors.lines[0], "big.csv:100001: more than 100000 lines; split the plan");
	wave_plan_free(&plan);
	wave_errors_free(&errors);
	free(text);
}

static void test_byte_limit(void **state)
{
	size_t len = WAVES_MAX_BYTES + 1;
	char *text = malloc(len);
	assert_non_null(text);
	memset(text, 'A', len);
	struct wave_plan plan;
	struct wave_errors errors;
	assert_int_equal(waves_parse("huge.csv", text, len, &plan, &errors), UV_E2BIG);
	assert_int_equal(errors.count, 1);
	assert_string_equal(errors.lines[0],
			    "huge.csv: 16777217 bytes, over the limit of 16777216 (16 MiB); split the plan");
	assert_null(plan.entries);
	wave_plan_free(&plan);
	wave_errors_free(&errors);
	free(text);
}

static void test_long_value_shown_short(void **state)
{
	/* A whole paragraph pasted into a cell: the message stays one line. */
	char text[400];
	snprintf(text, sizeof(text), H "EXCH001,1,%0200d\n", 7);
	struct parsed p;
	parse(&p, text);
	assert_int_equal(p.errors.count, 1);
	assert_string_equal(p.errors.lines[0],
			    "waves.csv:2: planned_date: '0000000000000000000000000000000000000000...' "
			    "is not a date (YYYY-MM-DD)");
	parsed_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_plan),
		cmocka_unit_test(test_line_ends),
		cmocka_unit_test(test_length_not_text_end),
		cmocka_unit_test(test_calendar),
		cmocka_unit_test(test_bad_lines),
		cmocka_unit_test(test_duplicate_of_bad_line),
		cmocka_unit_test(test_bad_header),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_every_bad_line_reported),
		cmocka_unit_test(test_error_cap),
		cmocka_unit_test(test_line_limit),
		cmocka_unit_test(test_byte_limit),
		cmocka_unit_test(test_long_value_shown_short),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
