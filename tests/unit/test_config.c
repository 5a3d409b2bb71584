/* config: the behaviour a person editing agent.ini relies on, and the exact
 * messages they read when they get it wrong. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "config.h"
#include "testutil.h"
#include "util.h"

enum backend { BACKEND_SIM, BACKEND_WIN32 };
static const char *const backend_names[] = { "sim", "win32", NULL };

struct agent_conf {
	char *host_id;
	char *spool_dir;
	int64_t workers;
	bool debug;
	uint64_t spool_limit;
	uint64_t heartbeat_ms;
	struct config_list collectors;
	int backend;
	int64_t nice;
	char *ca;
	char *key;
	char *crl;
};

#define AGENT(field) offsetof(struct agent_conf, field)

static const struct config_key agent_keys[] = {
	{ .section = "agent", .name = "host_id", .type = CONFIG_STRING, .offset = AGENT(host_id),
	  .flags = CONFIG_REQUIRED, .help = "Name this host reports to the collector." },
	{ .section = "agent", .name = "spool_dir", .type = CONFIG_PATH, .offset = AGENT(spool_dir),
	  .default_value = "spool", .help = "Where unsent reports wait." },
	{ .section = "agent", .name = "workers", .type = CONFIG_INT, .offset = AGENT(workers),
	  .default_value = "4", .min = 1, .max = 64, .help = "Probe threads." },
	{ .section = "agent", .name = "debug", .type = CONFIG_BOOL, .offset = AGENT(debug),
	  .default_value = "off", .help = "Log every probe." },
	{ .section = "agent", .name = "spool_limit", .type = CONFIG_SIZE,
	  .offset = AGENT(spool_limit), .default_value = "64M", .min = 1024, .max = INT64_MAX,
	  .help = "Most disk the spool may use." },
	{ .section = "agent", .name = "heartbeat", .type = CONFIG_DURATION,
	  .offset = AGENT(heartbeat_ms), .default_value = "30s", .min = 1000, .max = 3600000,
	  .help = "How often an idle agent reports." },
	{ .section = "agent", .name = "collectors", .type = CONFIG_LIST,
	  .offset = AGENT(collectors), .default_value = "collector.example:7443",
	  .help = "Collectors to try, in order." },
	{ .section = "agent", .name = "backend", .type = CONFIG_ENUM, .offset = AGENT(backend),
	  .default_value = "sim", .choices = backend_names, .help = "Where probes come from." },
	{ .section = "agent", .name = "nice", .type = CONFIG_INT, .offset = AGENT(nice),
	  .default_value = "0", .help = "Unbounded integer." },
	{ .section = "tls", .name = "ca", .type = CONFIG_PATH, .offset = AGENT(ca),
	  .flags = CONFIG_MUST_EXIST, .help = "CA that signed the collector's certificate." },
	{ .section = "tls", .name = "key", .type = CONFIG_PATH, .offset = AGENT(key),
	  .flags = CONFIG_PRIVATE_KEY, .help = "This agent's private key." },
	{ .section = "tls", .name = "crl", .type = CONFIG_PATH, .offset = AGENT(crl),
	  .help = "Revoked certificates." },
};
#define NKEYS (sizeof(agent_keys) / sizeof(agent_keys[0]))

static char tmp_dir[1024];

/* A directory for the files these tests create, removed with them at the end. */
static int make_tmp_dir(void **state)
{
	return test_tmpdir("test_config", tmp_dir, sizeof(tmp_dir));
}


static int remove_tmp_dir(void **state)
{
	if (tmp_dir[0])
		test_rmtree(tmp_dir);
	return 0;
}

/* Writes tmp_dir/name with exactly this mode (umask does not apply). */
static void write_file(const char *name, const char *text, int mode, char *path, size_t len)
{
	char err[256];
	uv_fs_t req;
	snprintf(path, len, "%s/%s", tmp_dir, name);
	char *slash = strrchr(path, '/');
	*slash = '\0';
	assert_int_equal(util_mkdir_p(path, 0700, err, sizeof(err)), 0);
	*slash = '/';
	assert_int_equal(util_write_file_atomic(path, text, strlen(text), mode, err, sizeof(err)),
			 0);
	assert_int_equal(uv_fs_chmod(NULL, &req, path, mode, NULL), 0);
	uv_fs_req_cleanup(&req);
}

static int load_text(const char *text, struct agent_conf *conf, struct config_error *err)
{
	return config_load_string(text, "agent.ini", NULL, agent_keys, NKEYS, conf, err);
}

/* Loads text that must succeed; a failure shows its message. */
static void load_ok(const char *text, struct agent_conf *conf)
{
	struct config_error err;
	int rc = load_text(text, conf, &err);
	assert_string_equal(err.msg, "");
	assert_int_equal(rc, 0);
}

/* Loads text that must fail, and checks the exact message. */
static void expect_error(const char *text, const char *message)
{
	struct agent_conf conf;
	struct config_error err;
	assert_true(load_text(text, &conf, &err) < 0);
	assert_string_equal(err.msg, message);
	config_free(agent_keys, NKEYS, &conf);
}

static void test_good_file_sets_every_type(void **state)
{
	struct agent_conf conf;
	const char *text = "; exfleet agent\n"
			   "[agent]\n"
			   "host_id = EXCH01\n"
			   "spool_dir = /var/spool/exfleet\n"
			   "workers = 8\n"
			   "debug = Yes\n"
			   "spool_limit = 1G\n"
			   "heartbeat = 90s\n"
			   "collectors = a:7443, b:7443 ,c\n"
			   "backend = win32\n"
			   "nice = -5\n"
			   "[tls]\n"
			   "crl = /etc/exfleet/crl.pem\n";
	load_ok(text, &conf);
	assert_string_equal(conf.host_id, "EXCH01");
	assert_string_equal(conf.spool_dir, "/var/spool/exfleet");
	assert_int_equal(conf.workers, 8);
	assert_true(conf.debug);
	assert_int_equal(conf.spool_limit, 1ull << 30);
	assert_int_equal(conf.heartbeat_ms, 90000);
	assert_int_equal(conf.collectors.count, 3);
	assert_string_equal(conf.collectors.items[0], "a:7443");
	assert_string_equal(conf.collectors.items[1], "b:7443");
	assert_string_equal(conf.collectors.items[2], "c");
	assert_int_equal(conf.backend, BACKEND_WIN32);
	assert_int_equal(conf.nice, -5);
	assert_null(conf.ca);
	assert_null(conf.key);
	assert_string_equal(conf.crl, "/etc/exfleet/crl.pem");
	config_free(agent_keys, NKEYS, &conf);
	assert_null(conf.host_id);
	assert_null(conf.collectors.items);
	assert_int_equal(conf.collectors.count, 0);
}

static void test_defaults_apply_to_keys_the_file_leaves_out(void **state)
{
	struct agent_conf conf;
	load_ok("[agent]\nhost_id = EXCH01\n", &conf);
	assert_string_equal(conf.spool_dir, "spool");
	assert_int_equal(conf.workers, 4);
	assert_false(conf.debug);
	assert_int_equal(conf.spool_limit, 64ull << 20);
	assert_int_equal(conf.heartbeat_ms, 30000);
	assert_int_equal(conf.collectors.count, 1);
	assert_string_equal(conf.collectors.items[0], "collector.example:7443");
	assert_int_equal(conf.backend, BACKEND_SIM);
	assert_null(conf.crl);
	config_free(agent_keys, NKEYS, &conf);
}

static void test_empty_value_unsets_string_path_and_list(void **state)
{
	struct agent_conf conf;
	load_ok("[agent]\nhost_id = h\nspool_dir =\ncollectors =\n", &conf);
	assert_null(conf.spool_dir);
	assert_null(conf.collectors.items);
	assert_int_equal(conf.collectors.count, 0);
	config_free(agent_keys, NKEYS, &conf);
}

static void test_empty_value_for_required_key_is_refused(void **state)
{
	expect_error("[agent]\nhost_id =\n", "agent.ini:2: [agent] host_id: a value is required");
}

static void test_relative_paths_resolve_against_config_dir(void **state)
{
	struct agent_conf conf;
	struct config_error err;
	char config[1100], ca[1100], expected[1100];
	write_file("rel/certs/ca.pem", "not checked for content\n", 0644, ca, sizeof(ca));
	write_file("rel/agent.ini",
		   "[agent]\nhost_id = h\n[tls]\nca = certs/ca.pem\ncrl = /abs/crl.pem\n", 0644,
		   config, sizeof(config));
	assert_int_equal(config_load(config, agent_keys, NKEYS, &conf, &err), 0);
	assert_string_equal(conf.ca, ca);
	assert_string_equal(conf.crl, "/abs/crl.pem");
	/* A relative default starts from the config file's directory too. */
	snprintf(expected, sizeof(expected), "%s/rel/spool", tmp_dir);
	assert_string_equal(conf.spool_dir, expected);
	config_free(agent_keys, NKEYS, &conf);
}

static void test_relative_paths_resolve_against_base_dir(void **state)
{
	struct agent_conf conf;
	struct config_error err;
	const char *text = "[agent]\nhost_id = h\nspool_dir = q\n[tls]\ncrl = crl/x.pem\n";
	assert_int_equal(config_load_string(text, "agent.ini", "/etc/exfleet", agent_keys, NKEYS,
					    &conf, &err),
			 0);
	assert_string_equal(conf.spool_dir, "/etc/exfleet/q");
	assert_string_equal(conf.crl, "/etc/exfleet/crl/x.pem");
	config_free(agent_keys, NKEYS, &conf);
	load_ok(text, &conf);
	assert_string_equal(conf.crl, "crl/x.pem");
	config_free(agent_keys, NKEYS, &conf);
}

static void test_missing_file_names_the_path(void **state)
{
	struct agent_conf conf;
	struct config_error err;
	char path[1100], expected[1200];
	snprintf(path, sizeof(path), "%s/absent/agent.ini", tmp_dir);
	snprintf(expected, sizeof(expected), "%s: cannot read: No such file or directory", path);
	assert_int_equal(config_load(path, agent_keys, NKEYS, &conf, &err), UV_ENOENT);
	assert_string_equal(err.msg, expected);
	config_free(agent_keys, NKEYS, &conf);
}

static void test_syntax_error_names_the_line(void **state)
{
	expect_error("[agent]\nhost_id = h\n\n; comment\n# comment\nworkers = 2\nthis is not ini\n",
		     "agent.ini:7: syntax error: expected '[section]' or 'key = value'");
}

static void test_unclosed_section_is_a_syntax_error(void **state)
{
	expect_error("[agent\nhost_id = h\n",
		     "agent.ini:1: syntax error: expected '[section]' or 'key = value'");
}

static void test_earliest_error_wins_over_later_bad_value(void **state)
{
	/* inih goes on after a syntax error; the bad value after it is not the first. */
	expect_error("[agent]\nhost_id = h\nnonsense\nworkers = many\n",
		     "agent.ini:3: syntax error: expected '[section]' or 'key = value'");
}

static void test_unknown_section_names_its_line(void **state)
{
	expect_error("[agent]\nhost_id = h\n[bogus]\n; a comment\nx = 1\n",
		     "agent.ini:3: unknown section [bogus]");
}

static void test_unknown_section_suggests_a_near_one(void **state)
{
	expect_error("[agent]\nhost_id = h\n[tsl]\nca = x\n",
		     "agent.ini:3: unknown section [tsl]; did you mean [tls]?");
}

static void test_key_outside_any_section(void **state)
{
	expect_error("host_id = h\n[agent]\n",
		     "agent.ini:1: key 'host_id' is outside any section; put it under a [section] "
		     "line");
}

static void test_unknown_key_suggests_a_near_one(void **state)
{
	expect_error("[agent]\nhost_id = h\nspool_limt = 64M\n",
		     "agent.ini:3: [agent] unknown key 'spool_limt'; did you mean 'spool_limit'?");
}

static void test_unknown_key_hint_ignores_case(void **state)
{
	expect_error("[agent]\nHost_ID = h\n",
		     "agent.ini:2: [agent] unknown key 'Host_ID'; did you mean 'host_id'?");
}

static void test_unknown_key_far_from_any_has_no_hint(void **state)
{
	expect_error("[agent]\nhost_id = h\ncolour = blue\n",
		     "agent.ini:3: [agent] unknown key 'colour'");
}

static void test_unknown_key_hint_only_from_its_section(void **state)
{
	/* "ca" is a [tls] key, not an [agent] one. */
	expect_error("[agent]\nhost_id = h\ncb = x\n", "agent.ini:3: [agent] unknown key 'cb'");
}

static void test_bad_size_names_key_and_value(void **state)
{
	expect_error("[agent]\nhost_id = h\nspool_limit = 64Q\n",
		     "agent.ini:3: [agent] spool_limit: '64Q' is not a size (e.g. 64M)");
}

static void test_duration_below_minimum(void **state)
{
	expect_error("[agent]\nhost_id = h\nheartbeat = 0s\n",
		     "agent.ini:3: [agent] heartbeat: '0s' is below the minimum 1s");
}

static void test_duration_above_maximum(void **state)
{
	expect_error("[agent]\nhost_id = h\nheartbeat = 2h\n",
		     "agent.ini:3: [agent] heartbeat: '2h' is above the maximum 1h");
}

static void test_int_out_of_bounds(void **state)
{
	expect_error("[agent]\nhost_id = h\nworkers = 0\n",
		     "agent.ini:3: [agent] workers: '0' is below the minimum 1");
	expect_error("[agent]\nhost_id = h\nworkers = 65\n",
		     "agent.ini:3: [agent] workers: '65' is above the maximum 64");
}

static void test_size_below_minimum_in_size_units(void **state)
{
	expect_error("[agent]\nhost_id = h\nspool_limit = 1000\n",
		     "agent.ini:3: [agent] spool_limit: '1000' is below the minimum 1K");
}

static void test_bad_enum_lists_the_choices(void **state)
{
	expect_error("[agent]\nhost_id = h\nbackend = foo\n",
		     "agent.ini:3: [agent] backend: 'foo' is not one of: sim, win32");
}

static void test_enum_is_case_sensitive(void **state)
{
	expect_error("[agent]\nhost_id = h\nbackend = SIM\n",
		     "agent.ini:3: [agent] backend: 'SIM' is not one of: sim, win32");
}

static void test_enum_stores_the_index(void **state)
{
	struct agent_conf conf;
	load_ok("[agent]\nhost_id = h\nbackend = sim\n", &conf);
	assert_int_equal(conf.backend, BACKEND_SIM);
	config_free(agent_keys, NKEYS, &conf);
	load_ok("[agent]\nhost_id = h\nbackend = win32\n", &conf);
	assert_int_equal(conf.backend, BACKEND_WIN32);
	config_free(agent_keys, NKEYS, &conf);
}

static void test_duplicate_key_names_both_lines(void **state)
{
	expect_error("[agent]\nhost_id = a\nworkers = 2\n[tls]\n[agent]\nhost_id = b\n",
		     "agent.ini:6: [agent] host_id: set twice (first on line 2)");
}

static void test_missing_required_key(void **state)
{
	expect_error("[agent]\nworkers = 2\n",
		     "agent.ini: [agent] host_id: required key is missing");
}

static void test_list_items_are_trimmed(void **state)
{
	struct agent_conf conf;
	struct config_error err;
	assert_int_equal(load_text("[agent]\nhost_id = h\ncollectors =  one ,\ttwo,three  \n",
				   &conf, &err),
			 0);
	assert_int_equal(conf.collectors.count, 3);
	assert_string_equal(conf.collectors.items[0], "one");
	assert_string_equal(conf.collectors.items[1], "two");
	assert_string_equal(conf.collectors.items[2], "three");
	config_free(agent_keys, NKEYS, &conf);
	load_ok("[agent]\nhost_id = h\ncollectors = only\n", &conf);
	assert_int_equal(conf.collectors.count, 1);
	assert_string_equal(conf.collectors.items[0], "only");
	config_free(agent_keys, NKEYS, &conf);
}

static void test_list_empty_items_are_refused(void **state)
{
	expect_error("[agent]\nhost_id = h\ncollectors = a,,b\n",
		     "agent.ini:3: [agent] collectors: 'a,,b' has an empty item");
	expect_error("[agent]\nhost_id = h\ncollectors = a, ,b\n",
		     "agent.ini:3: [agent] collectors: 'a, ,b' has an empty item");
	expect_error("[agent]\nhost_id = h\ncollectors = a,\n",
		     "agent.ini:3: [agent] collectors: 'a,' has an empty item");
	expect_error("[agent]\nhost_id = h\ncollectors = ,a\n",
		     "agent.ini:3: [agent] collectors: ',a' has an empty item");
}

/* A table without bounds, to reach the edges of the SIZE and DURATION types. */
struct limits_conf {
	uint64_t bytes;
	uint64_t ms;
};

static const struct config_key limits_keys[] = {
	{ .section = "limits", .name = "bytes", .type = CONFIG_SIZE,
	  .offset = offsetof(struct limits_conf, bytes) },
	{ .section = "limits", .name = "timeout", .type = CONFIG_DURATION,
	  .offset = offsetof(struct limits_conf, ms) },
};
#define NLIMITS (sizeof(limits_keys) / sizeof(limits_keys[0]))

/* Loads "[limits]\nkey = value"; returns the result, err holds the message. */
static int load_limit(const char *key, const char *value, struct limits_conf *conf,
		      struct config_error *err)
{
	char text[256];
	snprintf(text, sizeof(text), "[limits]\n%s = %s\n", key, value);
	return config_load_string(text, "t.ini", NULL, limits_keys, NLIMITS, conf, err);
}

static void test_size_units(void **state)
{
	static const struct {
		const char *text;
		uint64_t bytes;
	} cases[] = {
		{ "0", 0 },
		{ "4096", 4096 },
		{ "64K", 64ull << 10 },
		{ "64KiB", 64ull << 10 },
		{ "64M", 64ull << 20 },
		{ "64MiB", 64ull << 20 },
		{ "1G", 1ull << 30 },
		{ "1GiB", 1ull << 30 },
		{ "2T", 2ull << 40 },
		{ "2TiB", 2ull << 40 },
		{ "16777215T", 16777215ull << 40 },
		{ "18446744073709551615", UINT64_MAX },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct limits_conf conf;
		struct config_error err;
		assert_int_equal(load_limit("bytes", cases[i].text, &conf, &err), 0);
		assert_int_equal(conf.bytes, cases[i].bytes);
	}
}

static void test_size_overflow_is_an_error_not_a_wrap(void **state)
{
	static const char *const huge[] = {
		"99999999999999999999G",
		"18446744073709551616",
		"16777216T", /* exactly 2^64 bytes */
		"17179869184G",
	};
	for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
		struct limits_conf conf;
		struct config_error err;
		char message[256];
		snprintf(message, sizeof(message), "t.ini:2: [limits] bytes: '%s' is too large",
			 huge[i]);
		assert_int_equal(load_limit("bytes", huge[i], &conf, &err), UV_EINVAL);
		assert_string_equal(err.msg, message);
	}
}

static void test_size_malformed(void **state)
{
	static const char *const bad[] = { "K",    "-1",   "1.5G", "64 M", "64k",
					   "64KB", "0x10", "64MM", "",     "+5" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct limits_conf conf;
		struct config_error err;
		char message[256];
		snprintf(message, sizeof(message),
			 "t.ini:2: [limits] bytes: '%s' is not a size (e.g. 64M)", bad[i]);
		assert_int_equal(load_limit("bytes", bad[i], &conf, &err), UV_EINVAL);
		assert_string_equal(err.msg, message);
	}
}

static void test_duration_units(void **state)
{
	static const struct {
		const char *text;
		uint64_t ms;
	} cases[] = {
		{ "0", 0 },
		{ "500ms", 500 },
		{ "1500ms", 1500 },
		{ "10s", 10000 },
		{ "10", 10000 }, /* a bare number is seconds */
		{ "5m", 300000 },
		{ "1h", 3600000 },
		{ "2d", 2ull * 86400000 },
		/* The most seconds that fit in 64-bit milliseconds. */
		{ "18446744073709551s", 18446744073709551000ull },
		{ "18446744073709551615ms", UINT64_MAX },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct limits_conf conf;
		struct config_error err;
		assert_int_equal(load_limit("timeout", cases[i].text, &conf, &err), 0);
		assert_int_equal(conf.ms, cases[i].ms);
	}
}

static void test_duration_overflow_is_an_error_not_a_wrap(void **state)
{
	static const char *const huge[] = { "18446744073709552", "18446744073709552s",
					    "99999999999999999999d", "213503982335d",
					    "18446744073709551616ms" };
	for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
		struct limits_conf conf;
		struct config_error err;
		char message[256];
		snprintf(message, sizeof(message), "t.ini:2: [limits] timeout: '%s' is too large",
			 huge[i]);
		assert_int_equal(load_limit("timeout", huge[i], &conf, &err), UV_EINVAL);
		assert_string_equal(err.msg, message);
	}
}

static void test_duration_malformed(void **state)
{
	static const char *const bad[] = { "1.5s", "s",  "10 s", "1h30m", "-1s",
					   "10S",  "3w", "ms",   "",      "10sec" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct limits_conf conf;
		struct config_error err;
		char message[256];
		snprintf(message, sizeof(message),
			 "t.ini:2: [limits] timeout: '%s' is not a duration (e.g. 30s)", bad[i]);
		assert_int_equal(load_limit("timeout", bad[i], &conf, &err), UV_EINVAL);
		assert_string_equal(err.msg, message);
	}
}

static void test_int_edges(void **state)
{
	struct agent_conf conf;
	load_ok("[agent]\nhost_id = h\nnice = -9223372036854775808\n", &conf);
	assert_true(conf.nice == INT64_MIN);
	config_free(agent_keys, NKEYS, &conf);
	load_ok("[agent]\nhost_id = h\nnice = +9223372036854775807\n", &conf);
	assert_true(conf.nice == INT64_MAX);
	config_free(agent_keys, NKEYS, &conf);
	expect_error("[agent]\nhost_id = h\nnice = 9223372036854775808\n",
		     "agent.ini:3: [agent] nice: '9223372036854775808' is out of range");
	expect_error("[agent]\nhost_id = h\nnice = -9223372036854775809\n",
		     "agent.ini:3: [agent] nice: '-9223372036854775809' is out of range");
	expect_error("[agent]\nhost_id = h\nnice = 12abc\n",
		     "agent.ini:3: [agent] nice: '12abc' is not an integer");
	expect_error("[agent]\nhost_id = h\nnice = -\n",
		     "agent.ini:3: [agent] nice: '-' is not an integer");
}

static void test_bool_spellings(void **state)
{
	static const struct {
		const char *text;
		bool value;
	} cases[] = {
		{ "true", true },  { "TRUE", true },   { "yes", true }, { "On", true },
		{ "1", true },     { "false", false }, { "No", false }, { "off", false },
		{ "0", false },    { "FaLsE", false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct agent_conf conf;
		char text[128];
		snprintf(text, sizeof(text), "[agent]\nhost_id = h\ndebug = %s\n", cases[i].text);
		load_ok(text, &conf);
		assert_int_equal(conf.debug, cases[i].value);
		config_free(agent_keys, NKEYS, &conf);
	}
	expect_error("[agent]\nhost_id = h\ndebug = maybe\n",
		     "agent.ini:3: [agent] debug: 'maybe' is not a boolean (true or false)");
}

static void test_crlf_and_bom_are_accepted(void **state)
{
	struct agent_conf conf;
	struct config_error err;
	char path[1100];
	write_file("crlf.ini",
		   "\xEF\xBB\xBF[agent]\r\nhost_id = EXCH01\r\nworkers = 3\r\n\r\n[tls]\r\n"
		   "crl = /c.pem\r\n",
		   0644, path, sizeof(path));
	assert_int_equal(config_load(path, agent_keys, NKEYS, &conf, &err), 0);
	assert_string_equal(conf.host_id, "EXCH01");
	assert_int_equal(conf.workers, 3);
	assert_string_equal(conf.crl, "/c.pem");
	config_free(agent_keys, NKEYS, &conf);
}

static void test_crlf_keeps_line_numbers(void **state)
{
	expect_error("\xEF\xBB\xBF[agent]\r\nhost_id = h\r\n\r\nworkers = x\r\n",
		     "agent.ini:4: [agent] workers: 'x' is not an integer");
}

static void test_indented_keys_are_keys_not_continuations(void **state)
{
	/* inih would otherwise read "  workers = 9" as more of host_id's value. */
	struct agent_conf conf;
	load_ok("[agent]\n  host_id = h\n  workers = 9\n\t[tls]\n", &conf);
	assert_string_equal(conf.host_id, "h");
	assert_int_equal(conf.workers, 9);
	config_free(agent_keys, NKEYS, &conf);
}

static void test_inline_comment_after_value(void **state)
{
	struct agent_conf conf;
	load_ok("[agent]\nhost_id = h ; the host\nworkers: 5\n", &conf);
	assert_string_equal(conf.host_id, "h");
	assert_int_equal(conf.workers, 5);
	config_free(agent_keys, NKEYS, &conf);
}

static void test_long_line_is_refused_with_its_number(void **state)
{
	char text[600];
	int n = snprintf(text, sizeof(text), "[agent]\nhost_id = h\n[tls]\ncrl = /");
	memset(text + n, 'x', 300);
	snprintf(text + n + 300, sizeof(text) - (size_t)n - 300, "\nkey = k\n");
	struct agent_conf conf;
	struct config_error err;
	assert_int_equal(load_text(text, &conf, &err), UV_EINVAL);
	/* The limit is inih's line buffer less room for '\n' and NUL. */
	assert_non_null(strstr(err.msg, "agent.ini:4: line is longer than "));
	assert_non_null(strstr(err.msg, " characters"));
	config_free(agent_keys, NKEYS, &conf);
}

static void test_nul_byte_in_file_is_refused(void **state)
{
	struct agent_conf conf;
	struct config_error err;
	char path[1100], expected[1200], err_text[256];
	snprintf(path, sizeof(path), "%s/nul.ini", tmp_dir);
	static const char text[] = "[agent]\nhost_id = h\x00x\n";
	assert_int_equal(util_write_file_atomic(path, text, sizeof(text) - 1, 0644, err_text,
						sizeof(err_text)),
			 0);
	snprintf(expected, sizeof(expected),
		 "%s:2: contains a NUL byte; save the file as UTF-8 text", path);
	assert_int_equal(config_load(path, agent_keys, NKEYS, &conf, &err), UV_EINVAL);
	assert_string_equal(err.msg, expected);
	config_free(agent_keys, NKEYS, &conf);
}

static void test_control_bytes_in_values_are_not_echoed(void **state)
{
	expect_error("[agent]\nhost_id = h\nworkers = \x1b[31mred\n",
		     "agent.ini:3: [agent] workers: '?[31mred' is not an integer");
}

static void test_private_key_readable_by_others_is_refused(void **state)
{
	struct agent_conf conf;
	struct config_error err;
	char key[1100], text[1400], expected[3000];
	write_file("open/key.pem", "secret\n", 0644, key, sizeof(key));
	snprintf(text, sizeof(text), "[agent]\nhost_id = h\n[tls]\nkey = %s\n", key);
	snprintf(expected, sizeof(expected),
		 "agent.ini:4: [tls] key: %s: private key is accessible by group or others "
		 "(mode 0644); run: chmod 600 %s",
		 key, key);
	assert_int_equal(load_text(text, &conf, &err), UV_EPERM);
	assert_string_equal(err.msg, expected);
	config_free(agent_keys, NKEYS, &conf);
}

static void test_private_key_0600_is_accepted(void **state)
{
	struct agent_conf conf;
	struct config_error err;
	char key[1100], config[1100];
	write_file("private/key.pem", "secret\n", 0600, key, sizeof(key));
	write_file("private/agent.ini", "[agent]\nhost_id = h\n[tls]\nkey = key.pem\n", 0644,
		   config, sizeof(config));
	assert_int_equal(config_load(config, agent_keys, NKEYS, &conf, &err), 0);
	assert_string_equal(conf.key, key);
	config_free(agent_keys, NKEYS, &conf);
}

static void test_must_exist_path_that_is_missing(void **state)
{
	struct agent_conf conf;
	struct config_error err;
	assert_int_equal(load_text("[agent]\nhost_id = h\n[tls]\nca = /x/ca.pem\n", &conf, &err),
			 UV_ENOENT);
	config_free(agent_keys, NKEYS, &conf);
	expect_error("[agent]\nhost_id = h\n[tls]\nca = /x/ca.pem\n",
		     "agent.ini:4: [tls] ca: cannot read /x/ca.pem: No such file or directory");
}

static void test_must_exist_path_that_is_a_directory(void **state)
{
	char text[1400], expected[3000];
	snprintf(text, sizeof(text), "[agent]\nhost_id = h\n[tls]\nca = %s\n", tmp_dir);
	snprintf(expected, sizeof(expected),
		 "agent.ini:4: [tls] ca: cannot read %s: it is a directory", tmp_dir);
	struct agent_conf conf;
	struct config_error err;
	assert_int_equal(load_text(text, &conf, &err), UV_EISDIR);
	assert_string_equal(err.msg, expected);
	config_free(agent_keys, NKEYS, &conf);
}

/* A default path is checked only if the file keeps it. */
struct ca_conf {
	char *ca;
};

static const struct config_key ca_keys[] = {
	{ .section = "tls", .name = "ca", .type = CONFIG_PATH,
	  .offset = offsetof(struct ca_conf, ca), .flags = CONFIG_MUST_EXIST,
	  .default_value = "/nonexistent/ca.pem" },
};

static void test_missing_default_path_is_reported_unless_replaced(void **state)
{
	struct ca_conf conf;
	struct config_error err;
	char ca[1100], text[1400];
	assert_int_equal(config_load_string("", "agent.ini", NULL, ca_keys, 1, &conf, &err),
			 UV_ENOENT);
	assert_string_equal(err.msg, "agent.ini: [tls] ca: cannot read /nonexistent/ca.pem: "
				     "No such file or directory (built-in default)");
	config_free(ca_keys, 1, &conf);
	write_file("default/ca.pem", "ca\n", 0644, ca, sizeof(ca));
	snprintf(text, sizeof(text), "[tls]\nca = %s\n", ca);
	assert_int_equal(config_load_string(text, "agent.ini", NULL, ca_keys, 1, &conf, &err), 0);
	assert_string_equal(conf.ca, ca);
	config_free(ca_keys, 1, &conf);
}

static void test_bad_key_table_is_reported(void **state)
{
	struct limits_conf conf;
	struct config_error err;
	const struct config_key bad[] = {
		{ .section = "agent", .name = "timeout", .type = CONFIG_DURATION,
		  .offset = offsetof(struct limits_conf, ms), .min = 10, .max = 5 },
	};
	assert_int_equal(config_load_string("", "t.ini", NULL, bad, 1, &conf, &err), UV_EINVAL);
	assert_string_equal(err.msg, "t.ini: key table: [agent] timeout has min above max");
}

static void test_free_after_failure_is_safe(void **state)
{
	/* Strings and a list are already on the heap when line 5 fails; under
	 * ASan a leak or a double free fails this test. */
	struct agent_conf conf;
	struct config_error err;
	memset(&conf, 0xA5, sizeof(conf)); /* whatever the caller's stack held */
	assert_int_equal(load_text("[agent]\nhost_id = h\nspool_dir = /s\ncollectors = a, b\n"
				   "workers = none\n",
				   &conf, &err),
			 UV_EINVAL);
	assert_string_equal(err.msg, "agent.ini:5: [agent] workers: 'none' is not an integer");
	config_free(agent_keys, NKEYS, &conf);
	config_free(agent_keys, NKEYS, &conf);
	assert_null(conf.host_id);
	assert_null(conf.spool_dir);

	char path[1100];
	snprintf(path, sizeof(path), "%s/never.ini", tmp_dir);
	memset(&conf, 0xA5, sizeof(conf));
	assert_int_equal(config_load(path, agent_keys, NKEYS, &conf, &err), UV_ENOENT);
	config_free(agent_keys, NKEYS, &conf);
}

static void test_reference_documents_every_key(void **state)
{
	FILE *out = tmpfile();
	assert_non_null(out);
	config_print_reference(out, agent_keys, NKEYS);
	long size = ftell(out);
	assert_true(size > 0);
	char *text = calloc(1, (size_t)size + 1);
	assert_non_null(text);
	rewind(out);
	assert_int_equal(fread(text, 1, (size_t)size, out), (size_t)size);
	fclose(out);

	assert_non_null(strstr(text, "[agent]\n# Name this host reports to the collector.\n"
				     "# string; required\n#host_id =\n"));
	assert_non_null(strstr(text, "# How often an idle agent reports.\n"
				     "# duration: 500ms, 10s, 5m, 1h, 2d (a bare number is "
				     "seconds); from 1s to 1h\n#heartbeat = 30s\n"));
	assert_non_null(strstr(text, "# one of: sim, win32\n#backend = sim\n"));
	assert_non_null(strstr(text, "\n[tls]\n"));
	assert_non_null(strstr(text, "the file must be readable by its owner only\n#key =\n"));
	/* Each section once, [agent] first. */
	assert_true(strstr(text, "[agent]") < strstr(text, "[tls]"));
	assert_null(strstr(strstr(text, "[agent]") + 1, "[agent]"));

	/* The reference parses, and sets nothing: every key line is a comment. */
	struct agent_conf conf;
	struct config_error err;
	assert_int_equal(config_load_string(text, "ref.ini", NULL, agent_keys, NKEYS, &conf, &err),
			 UV_EINVAL);
	assert_string_equal(err.msg, "ref.ini: [agent] host_id: required key is missing");
	config_free(agent_keys, NKEYS, &conf);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_file_sets_every_type),
		cmocka_unit_test(test_defaults_apply_to_keys_the_file_leaves_out),
		cmocka_unit_test(test_empty_value_unsets_string_path_and_list),
		cmocka_unit_test(test_empty_value_for_required_key_is_refused),
		cmocka_unit_test(test_relative_paths_resolve_against_config_dir),
		cmocka_unit_test(test_relative_paths_resolve_against_base_dir),
		cmocka_unit_test(test_missing_file_names_the_path),
		cmocka_unit_test(test_syntax_error_names_the_line),
		cmocka_unit_test(test_unclosed_section_is_a_syntax_error),
		cmocka_unit_test(test_earliest_error_wins_over_later_bad_value),
		cmocka_unit_test(test_unknown_section_names_its_line),
		cmocka_unit_test(test_unknown_section_suggests_a_near_one),
		cmocka_unit_test(test_key_outside_any_section),
		cmocka_unit_test(test_unknown_key_suggests_a_near_one),
		cmocka_unit_test(test_unknown_key_hint_ignores_case),
		cmocka_unit_test(test_unknown_key_far_from_any_has_no_hint),
		cmocka_unit_test(test_unknown_key_hint_only_from_its_section),
		cmocka_unit_test(test_bad_size_names_key_and_value),
		cmocka_unit_test(test_duration_below_minimum),
		cmocka_unit_test(test_duration_above_maximum),
		cmocka_unit_test(test_int_out_of_bounds),
		cmocka_unit_test(test_size_below_minimum_in_size_units),
		cmocka_unit_test(test_bad_enum_lists_the_choices),
		cmocka_unit_test(test_enum_is_case_sensitive),
		cmocka_unit_test(test_enum_stores_the_index),
		cmocka_unit_test(test_duplicate_key_names_both_lines),
		cmocka_unit_test(test_missing_required_key),
		cmocka_unit_test(test_list_items_are_trimmed),
		cmocka_unit_test(test_list_empty_items_are_refused),
		cmocka_unit_test(test_size_units),
		cmocka_unit_test(test_size_overflow_is_an_error_not_a_wrap),
		cmocka_unit_test(test_size_malformed),
		cmocka_unit_test(test_duration_units),
		cmocka_unit_test(test_duration_overflow_is_an_error_not_a_wrap),
		cmocka_unit_test(test_duration_malformed),
		cmocka_unit_test(test_int_edges),
		cmocka_unit_test(test_bool_spellings),
		cmocka_unit_test(test_crlf_and_bom_are_accepted),
		cmocka_unit_test(test_crlf_keeps_line_numbers),
		cmocka_unit_test(test_indented_keys_are_keys_not_continuations),
		cmocka_unit_test(test_inline_comment_after_value),
		cmocka_unit_test(test_long_line_is_refused_with_its_number),
		cmocka_unit_test(test_nul_byte_in_file_is_refused),
		cmocka_unit_test(test_control_bytes_in_values_are_not_echoed),
		cmocka_unit_test(test_private_key_readable_by_others_is_refused),
		cmocka_unit_test(test_private_key_0600_is_accepted),
		cmocka_unit_test(test_must_exist_path_that_is_missing),
		cmocka_unit_test(test_must_exist_path_that_is_a_directory),
		cmocka_unit_test(test_missing_default_path_is_reported_unless_replaced),
		cmocka_unit_test(test_bad_key_table_is_reported),
		cmocka_unit_test(test_free_after_failure_is_safe),
		cmocka_unit_test(test_reference_documents_every_key),
	};
	return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
