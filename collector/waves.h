/* Wave plan: which host is promoted in which wave, and when. The operator
 * keeps it as a spreadsheet and saves it as CSV; this module turns that text
 * into entries, or into a list of every line that is wrong. Pure: no I/O.
 *
 * The file (RFC 4180 CSV, saved as "CSV UTF-8" by Excel or by hand):
 *   host,wave,planned_date        header, required; names in any case and
 *   EXCH001,1,2026-11-29          in any order; no other columns
 *   EXCH002,"Wave 2",             empty planned_date: not known yet
 * A UTF-8 BOM and CRLF, LF or CR line ends are accepted. Fields may be quoted
 * ("" is a quote inside quotes; commas inside quotes are data); a line break
 * inside a quoted field is refused. Blanks around fields are dropped. Blank
 * lines, and lines whose fields are all empty (spreadsheets write ",,"), are
 * skipped.
 *   host          1..64 of [A-Za-z0-9._-], not starting with '.' or '-' (the
 *                 host ids certificates carry); listed once: EXCH001 and
 *                 exch001 are one Windows server, so case is ignored there
 *   wave          1..32 of [A-Za-z0-9._ -]
 *   planned_date  YYYY-MM-DD, a real calendar date, or empty
 *
 * Errors read "NAME:LINE: FIELD: what is wrong" (or "NAME:LINE: ..." for the
 * line, "NAME: ..." for the file); values are shown quoted, at most 40
 * characters, with any byte that is not printable ASCII as \xNN, so every
 * error line is printable ASCII whatever the file held. */
#ifndef EXFLEET_WAVES_H
#define EXFLEET_WAVES_H

#include <stddef.h>

#define WAVES_MAX_BYTES (16u << 20)   /* 16 MiB; 100000 hosts take about 4 */
#define WAVES_MAX_LINES 100000u
#define WAVES_MAX_ERRORS 100u         /* messages kept; the rest are counted */
#define WAVES_HOST_MAX 64
#define WAVES_WAVE_MAX 32
#define WAVES_DATE_LEN 10

struct wave_entry {
	char host_id[WAVES_HOST_MAX + 1];
	char wave[WAVES_WAVE_MAX + 1];          /* trimmed */
	char planned_date[WAVES_DATE_LEN + 1];  /* "YYYY-MM-DD"; "" when unknown */
	unsigned line;                          /* where it came from */
};

/* Entries in file order. */
struct wave_plan {
	struct wave_entry *entries;
	size_t count;
};

/* Every problem found, in line order. At most WAVES_MAX_ERRORS messages are
 * kept; when there were more, one last line reads "NAME: ... and N more
 * errors" (so count can be WAVES_MAX_ERRORS + 1). total counts every error
 * found, that last line excluded. */
struct wave_errors {
	char **lines;
	size_t count;
	size_t total;
};

/* Parses a whole plan of len bytes (text need not be NUL-terminated; name is
 * the file name used in messages). Returns 0 with every entry in plan and no
 * errors, or a negative code with plan empty and errors filled in: UV_EINVAL
 * for a bad plan (an empty file, or a header with no host under it, is one),
 * UV_E2BIG for more than WAVES_MAX_BYTES or WAVES_MAX_LINES, UV_ENOMEM.
 * Nothing is returned in part, so the caller can import all or nothing.
 * Both outputs must be freed, whatever the result. */
int waves_parse(const char *name, const char *text, size_t len, struct wave_plan *plan,
		struct wave_errors *errors);

void wave_plan_free(struct wave_plan *plan);
void wave_errors_free(struct wave_errors *errors);

#endif
