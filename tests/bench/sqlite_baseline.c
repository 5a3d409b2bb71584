/* The durable-ingest baseline: a plain batched SQLite insert of the rows the
 * collector stores for events, with the collector's durability settings (WAL,
 * synchronous = FULL) and its batch policy at saturation (one transaction per
 * batch_max agent messages of --batch events each), and nothing else: no
 * network, no TLS, no protobuf, no queue, no per-host bookkeeping, no status
 * rules. What the collector reaches against this is the cost of everything
 * else it does per event.
 *
 *   exfleet-bench-sqlite --db FILE --rows N [--hosts H] [--batch B]
 *                        [--batch-max M]
 *
 * Rows go to H hosts in turn, B consecutive sequence numbers per host per
 * message, as H agents interleave in the collector's queue. Prints one JSON
 * object on stdout. Exit status: 0 done, 1 failed, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#define PROG "exfleet-bench-sqlite"

/* collector/store_sqlite.c, migration 1: the events table and its indexes,
 * copied verbatim (the baseline must pay for the same B-trees). */
static const char events_ddl[] =
	"CREATE TABLE events ("
	"  host_id TEXT NOT NULL, seq INTEGER NOT NULL,"
	"  record_number INTEGER, log TEXT, source TEXT, event_id INTEGER,"
	"  type INTEGER, category INTEGER, category_name TEXT,"
	"  time_generated INTEGER, strings TEXT, message TEXT, computer TEXT,"
	"  received_at INTEGER NOT NULL,"
	"  PRIMARY KEY (host_id, seq)"
	") WITHOUT ROWID;"
	"CREATE INDEX events_by_signature ON events (host_id, source, event_id, time_generated);"
	"CREATE INDEX events_by_time ON events (received_at);";

/* The collector's statement (ST_EVENT_INSERT). */
static const char event_insert_sql[] =
	"INSERT OR IGNORE INTO events (host_id, seq, record_number, log, source, event_id,"
	" type, category, category_name, time_generated, strings, message, computer,"
	" received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

/* tests/load/records.c: the routine events exfleet-loadgen sends, by
 * sequence number; strings as the collector stores them (a JSON array). */
static const struct routine_event {
	const char *log, *source, *category_name;
	int64_t event_id, category;
	int type;
	const char *message, *strings;
} routine[] = {
	{"Application", "MSExchangeIS Public", "General", 1221, 6, 4,
	 "The database has 0 megabytes of free space after online defragmentation has terminated.",
	 "[\"0\"]"},
	{"Application", "MSExchangeIS Private", "Background Cleanup", 1207, 5, 4,
	 "Starting to remove expired messages from folders.", "[]"},
	{"System", "Service Control Manager", "None", 7036, 0, 4,
	 "The Microsoft Exchange Event Service service entered the running state.",
	 "[\"Microsoft Exchange Event Service\",\"running\"]"},
	{"Application", "MSExchangeMTA", "Interface", 9298, 2, 4,
	 "Microsoft Exchange MTA has started.", "[]"},
};

#define ROUTINE_COUNT (sizeof(routine) / sizeof(routine[0]))

struct baseline_options {
	const char *db_path;
	uint64_t rows;
	unsigned hosts, batch, batch_max;
	const char *prefix;
};

static const char usage[] =
	"usage: " PROG " --db FILE --rows N [--hosts H] [--batch B] [--batch-max M]\n"
	"                 [--prefix PREFIX]\n"
	"\n"
	"Inserts N event rows into a new SQLite database FILE with the collector's\n"
	"events table, WAL and synchronous = FULL, one transaction per M messages of\n"
	"B events (the collector's batch at saturation), H hosts in turn.\n"
	"\n"
	"  --db FILE       the database to create; it must not exist\n"
	"  --rows N        event rows to insert\n"
	"  --hosts H       hosts the rows are spread over (300)\n"
	"  --batch B       events per agent message (100)\n"
	"  --batch-max M   messages per transaction (2048, the collector's batch_max)\n"
	"  --prefix P      host id prefix (LOAD), ids as exfleet-loadgen makes them\n"
	"\n"
	"Prints one JSON object. Exit status: 0 done, 1 failed, 2 usage.\n";

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int parse_count(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, PROG ": %s: '%s' is not a whole number from %" PRIu64 " to %" PRIu64 "\n",
			opt, s, min, max);
		return -1;
	}
	*out = v;
	return 0;
}

static int exec_sql(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		fprintf(stderr, PROG ": %s: %s\n", sql, msg ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

/* One event row, bound and stepped as the collector's write_events does. */
static int baseline_insert(sqlite3_stmt *s, const char *host_id, uint64_t seq, int64_t now)
{
	const struct routine_event *r = &routine[seq % ROUTINE_COUNT];
	sqlite3_bind_text(s, 1, host_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)seq);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)(uint32_t)seq);
	sqlite3_bind_text(s, 4, r->log, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, r->source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, r->event_id);
	sqlite3_bind_int(s, 7, r->type);
	sqlite3_bind_int64(s, 8, r->category);
	sqlite3_bind_text(s, 9, r->category_name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 10, now);
	sqlite3_bind_text(s, 11, r->strings, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 12, r->message, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 13, host_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 14, now);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int baseline_run(const struct baseline_options *o)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *ins = NULL;
	uint64_t *next_seq = NULL;
	char (*host_ids)[65] = NULL;
	int rc = -1;

	struct stat sb;
	if (stat(o->db_path, &sb) == 0) {
		fprintf(stderr, PROG ": %s: already exists; name a new file\n", o->db_path);
		return -1;
	}
	if (sqlite3_open_v2(o->db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				     SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		fprintf(stderr, PROG ": %s: cannot open: %s\n", o->db_path,
			db ? sqlite3_errmsg(db) : "out of memory");
		goto out;
	}
	/* The collector's open_db() settings. */
	if (exec_sql(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
			 "PRAGMA foreign_keys = ON;") < 0 ||
	    exec_sql(db, events_ddl) < 0)
		goto out;
	if (sqlite3_prepare_v2(db, event_insert_sql, -1, &ins, NULL) != SQLITE_OK) {
		fprintf(stderr, PROG ": %s\n", sqlite3_errmsg(db));
		goto out;
	}
	next_seq = calloc(o->hosts, sizeof(*next_seq));
	host_ids = calloc(o->hosts, sizeof(*host_ids));
	if (!next_seq || !host_ids) {
		fprintf(stderr, PROG ": out of memory for %u hosts\n", o->hosts);
		goto out;
	}
	for (unsigned h = 0; h < o->hosts; h++) {
		snprintf(host_ids[h], sizeof(host_ids[h]), "%s%05u", o->prefix, h + 1);
		next_seq[h] = 2; /* 1 is the agent's first snapshot */
	}

	uint64_t done = 0, transactions = 0, message = 0;
	double start = now_s();
	while (done < o->rows) {
		if (exec_sql(db, "BEGIN IMMEDIATE") < 0)
			goto out;
		int64_t now = wall_ms();
		for (unsigned m = 0; m < o->batch_max && done < o->rows; m++, message++) {
			unsigned h = (unsigned)(message % o->hosts);
			for (unsigned i = 0; i < o->batch && done < o->rows; i++, done++) {
				if (baseline_insert(ins, host_ids[h], next_seq[h]++, now) < 0) {
					fprintf(stderr, PROG ": insert: %s\n", sqlite3_errmsg(db));
					goto out;
				}
			}
		}
		if (exec_sql(db, "COMMIT") < 0)
			goto out;
		transactions++;
	}
	double seconds = now_s() - start;
	printf("{\"rows\": %" PRIu64 ", \"seconds\": %.3f, \"rows_per_second\": %.0f, "
	       "\"transactions\": %" PRIu64 ", \"hosts\": %u, \"batch\": %u, \"batch_max\": %u, "
	       "\"sqlite_version\": \"%s\", \"journal_mode\": \"wal\", \"synchronous\": \"full\"}\n",
	       done, seconds, seconds > 0 ? (double)done / seconds : 0.0, transactions, o->hosts,
	       o->batch, o->batch_max, sqlite3_libversion());
	rc = 0;
out:
	sqlite3_finalize(ins);
	sqlite3_close(db);
	free(next_seq);
	free(host_ids);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"db", required_argument, NULL, 'd'},
					     {"rows", required_argument, NULL, 'n'},
					     {"hosts", required_argument, NULL, 'H'},
					     {"batch", required_argument, NULL, 'b'},
					     {"batch-max", required_argument, NULL, 'm'},
					     {"prefix", required_argument, NULL, 'p'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	struct baseline_options o = {
		.rows = 0, .hosts = 300, .batch = 100, .batch_max = 2048, .prefix = "LOAD"};
	uint64_t v;
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			o.db_path = optarg;
			break;
		case 'n':
			if (parse_count("--rows", optarg, 1, UINT64_C(1) << 40, &o.rows) < 0)
				return 2;
			break;
		case 'H':
			if (parse_count("--hosts", optarg, 1, 99999, &v) < 0)
				return 2;
			o.hosts = (unsigned)v;
			break;
		case 'b':
			if (parse_count("--batch", optarg, 1, 1000, &v) < 0)
				return 2;
			o.batch = (unsigned)v;
			break;
		case 'm':
			if (parse_count("--batch-max", optarg, 1, 1000000, &v) < 0)
				return 2;
			o.batch_max = (unsigned)v;
			break;
		case 'p':
			if (strlen(optarg) > 32) {
				fprintf(stderr, PROG ": --prefix: at most 32 characters\n");
				return 2;
			}
			o.prefix = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (optind < argc || !o.db_path || !o.rows) {
		fputs(usage, stderr);
		return 2;
	}
	return baseline_run(&o) == 0 ? 0 : 1;
}
