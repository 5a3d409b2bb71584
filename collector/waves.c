/* Wave plan CSV; waves.h gives the format. The whole file is read even after
 * an error, because an operator fixing a spreadsheet wants every bad line at
 * once, not one per import attempt. */
#include "waves.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "log.h"

#define SHOW_MAX 40
#define SHOW_LEN (SHOW_MAX * 4 + 4)
#define MSG_LEN 512
#define COLS_MAX 64 /* header columns looked at; more is an error anyway */

enum column { COL_HOST, COL_WAVE, COL_DATE, N_COLS };

static const char *const column_names[N_COLS] = {"host", "wave", "planned_date"};

static const char *const month_names[12] = {
	"January", "February", "March",     "April",   "May",      "June",
	"July",    "August",   "September", "October", "November", "December",
};

struct field {
	const char *text; /* NUL-terminated, in parser.scratch */
	size_t len;
};

struct parser {
	const char *name;
	struct wave_errors *errors;
	int oom;
	unsigned line;
	char *scratch; /* the current line's fields, unquoted */
	struct field fields[COLS_MAX];
	size_t n_fields; /* on the current line, also those beyond COLS_MAX */
	int have_header;
	int col_field[N_COLS]; /* which field of a line holds each column */
	char header_order[64]; /* "wave,host,planned_date", for messages */
	struct wave_entry *entries;
	size_t count, cap;
	size_t *slots; /* entries by lower-case host: index + 1, 0 free */
	size_t n_slots;
};

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int ieq(const char *a, const char *b)
{
	for (; *a && *b; a++, b++)
		if (lower(*a) != lower(*b))
			return 0;
	return *a == *b;
}

/* A value as a message shows it: printable ASCII as is, every other byte as
 * \xNN (the file may hold anything; the message goes to terminals and JSON). */
static const char *show(char *buf, const char *s, size_t len)
{
	size_t o = 0;
	for (size_t i = 0; i < len && i < SHOW_MAX; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f)
			buf[o++] = (char)c;
		else
			o += (size_t)snprintf(buf + o, SHOW_LEN - o, "\\x%02X", c);
	}
	if (len > SHOW_MAX) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

static void push_line(struct parser *p, const char *msg)
{
	struct wave_errors *e = p->errors;
	if (!e->lines) {
		e->lines = calloc(WAVES_MAX_ERRORS + 1, sizeof(*e->lines));
		if (!e->lines) {
			p->oom = 1;
			return;
		}
	}
	char *copy = strdup(msg);
	if (!copy) {
		p->oom = 1;
		return;
	}
	e->lines[e->count++] = copy;
}

/* line 0: about the whole file. */
static void add_error(struct parser *p, unsigned line, const char *fmt, ...) LOG_PRINTF(3, 4);

static void add_error(struct parser *p, unsigned line, const char *fmt, ...)
{
	p->errors->total++;
	if (p->errors->count >= WAVES_MAX_ERRORS)
		return;
	char msg[MSG_LEN];
	int n = line ? snprintf(msg, sizeof(msg), "%s:%u: ", p->name, line)
		     : snprintf(msg, sizeof(msg), "%s: ", p->name);
	if (n < 0 || (size_t)n >= sizeof(msg))
		n = (int)sizeof(msg) - 1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	push_line(p, msg);
}

/* What to call field i of the current line in a message. */
static const char *field_label(const struct parser *p, size_t i, char *buf, size_t len)
{
	if (p->have_header)
		for (int c = 0; c < N_COLS; c++)
			if (p->col_field[c] == (int)i)
				return column_names[c];
	snprintf(buf, len, "column %zu", i + 1);
	return buf;
}

/* Splits one line into fields, unquoting into scratch. Returns 0, or -1 once
 * it has said why the line cannot be read. */
static int split_line(struct parser *p, const char *s, size_t len)
{
	char *out = p->scratch;
	char label[32];
	size_t i = 0;

	p->n_fields = 0;
	for (;;) {
		char *val;
		while (i < len && is_blank(s[i]))
			i++;
		val = out;
		if (i < len && s[i] == '"') {
			for (i++;; i++) {
				if (i >= len) {
					add_error(p, p->line,
						  "%s: the quoted field is not closed (a field "
						  "cannot hold a line break)",
						  field_label(p, p->n_fields, label, sizeof(label)));
					return -1;
				}
				if (s[i] == '"') {
					if (i + 1 < len && s[i + 1] == '"')
						i++;
					else
						break;
				}
				*out++ = s[i];
			}
			i++;
			while (i < len && is_blank(s[i]))
				i++;
			if (i < len && s[i] != ',') {
				add_error(p, p->line,
					  "%s: text after the closing quote; inside quotes, "
					  "write a quote as \"\"",
					  field_label(p, p->n_fields, label, sizeof(label)));
				return -1;
			}
		} else {
			for (; i < len && s[i] != ','; i++) {
				if (s[i] == '"') {
					add_error(p, p->line,
						  "%s: a quote inside an unquoted field; put the "
						  "field in quotes and write the quote as \"\"",
						  field_label(p, p->n_fields, label, sizeof(label)));
					return -1;
				}
				*out++ = s[i];
			}
		}
		/* Blanks inside quotes go too: no field may hold them at its ends. */
		size_t lead = 0;
		while (val + lead < out && is_blank(val[lead]))
			lead++;
		if (lead) {
			memmove(val, val + lead, (size_t)(out - val) - lead);
			out -= lead;
		}
		while (out > val && is_blank(out[-1]))
			out--;
		*out++ = '\0';
		if (p->n_fields < COLS_MAX)
			p->fields[p->n_fields] =
				(struct field){.text = val, .len = (size_t)(out - 1 - val)};
		p->n_fields++;
		if (i >= len)
			return 0;
		i++; /* the comma */
	}
}

static int all_empty(const struct parser *p)
{
	for (size_t i = 0; i < p->n_fields && i < COLS_MAX; i++)
		if (p->fields[i].len)
			return 0;
	return 1;
}

static int read_header(struct parser *p)
{
	char shown[SHOW_LEN], unknown[MSG_LEN / 2];
	size_t used = 0, n_unknown = 0, n_known = 0;
	int bad = 0;

	for (int c = 0; c < N_COLS; c++)
		p->col_field[c] = -1;
	if (p->n_fields == 1 && strchr(p->fields[0].text, ';')) {
		add_error(p, p->line,
			  "the columns are separated by ';'; save the file with ',' between "
			  "them (in Excel: CSV UTF-8)");
		return -1;
	}
	if (p->n_fields > COLS_MAX) {
		add_error(p, p->line, "the header has %zu columns; it must be host,wave,planned_date",
			  p->n_fields);
		return -1;
	}
	unknown[0] = '\0';
	for (size_t i = 0; i < p->n_fields; i++) {
		const struct field *f = &p->fields[i];
		int c;
		for (c = 0; c < N_COLS; c++)
			if (ieq(f->text, column_names[c]))
				break;
		if (c == N_COLS) {
			n_unknown++;
			if (used < sizeof(unknown)) {
				int n = snprintf(unknown + used, sizeof(unknown) - used,
						 "%s'%s' (column %zu)", used ? ", " : "",
						 show(shown, f->text, f->len), i + 1);
				used += n > 0 ? (size_t)n : 0;
			}
			continue;
		}
		n_known++;
		if (p->col_field[c] >= 0) {
			add_error(p, p->line, "column %s appears twice (columns %d and %zu)",
				  column_names[c], p->col_field[c] + 1, i + 1);
			bad = 1;
			continue;
		}
		p->col_field[c] = (int)i;
	}
	if (n_known == 0) {
		add_error(p, p->line,
			  "the first line must be the header host,wave,planned_date (in any "
			  "order), not a line starting '%s'",
			  show(shown, p->fields[0].text, p->fields[0].len));
		return -1;
	}
	if (n_unknown) {
		add_error(p, p->line, "unknown column%s %s: the columns are host, wave and planned_date",
			  n_unknown == 1 ? "" : "s", unknown);
		bad = 1;
	}
	for (int c = 0; c < N_COLS; c++) {
		if (p->col_field[c] < 0) {
			add_error(p, p->line,
				  "missing column %s: the header must name host, wave and planned_date",
				  column_names[c]);
			bad = 1;
		}
	}
	if (bad)
		return -1;
	used = 0;
	for (size_t i = 0; i < N_COLS; i++)
		for (int c = 0; c < N_COLS; c++)
			if (p->col_field[c] == (int)i)
				used += (size_t)snprintf(p->header_order + used,
							 sizeof(p->header_order) - used, "%s%s",
							 i ? "," : "", column_names[c]);
	p->have_header = 1;
	return 0;
}

static int check_host(struct parser *p, const struct field *f)
{
	char shown[SHOW_LEN], bad[8];

	if (f->len == 0) {
		add_error(p, p->line, "host: empty; every line needs a host id");
		return -1;
	}
	if (f->len > WAVES_HOST_MAX) {
		add_error(p, p->line, "host: '%s' is longer than %d characters",
			  show(shown, f->text, f->len), WAVES_HOST_MAX);
		return -1;
	}
	for (size_t i = 0; i < f->len; i++) {
		char c = f->text[i];
		if (!is_alnum(c) && c != '.' && c != '_' && c != '-') {
			add_error(p, p->line,
				  "host: '%s' has '%s', which a host id cannot hold (letters, "
				  "digits, '.', '_', '-')",
				  show(shown, f->text, f->len), show(bad, &f->text[i], 1));
			return -1;
		}
	}
	if (f->text[0] == '.' || f->text[0] == '-') {
		add_error(p, p->line, "host: '%s' must not start with '.' or '-'",
			  show(shown, f->text, f->len));
		return -1;
	}
	return 0;
}

static int check_wave(struct parser *p, const struct field *f)
{
	char shown[SHOW_LEN], bad[8];

	if (f->len == 0) {
		add_error(p, p->line, "wave: empty; every host needs a wave");
		return -1;
	}
	if (f->len > WAVES_WAVE_MAX) {
		add_error(p, p->line, "wave: '%s' is longer than %d characters",
			  show(shown, f->text, f->len), WAVES_WAVE_MAX);
		return -1;
	}
	for (size_t i = 0; i < f->len; i++) {
		char c = f->text[i];
		if (!is_alnum(c) && c != '.' && c != '_' && c != '-' && c != ' ') {
			add_error(p, p->line,
				  "wave: '%s' has '%s', which a wave name cannot hold (letters, "
				  "digits, space, '.', '_', '-')",
				  show(shown, f->text, f->len), show(bad, &f->text[i], 1));
			return -1;
		}
	}
	return 0;
}

static int days_in_month(int year, int month)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
	return month == 2 && leap ? 29 : days[month - 1];
}

static int check_date(struct parser *p, const struct field *f)
{
	char shown[SHOW_LEN];
	const char *s = f->text;

	if (f->len == 0)
		return 0;
	if (f->len != WAVES_DATE_LEN || s[4] != '-' || s[7] != '-')
		goto bad;
	for (int i = 0; i < WAVES_DATE_LEN; i++)
		if (i != 4 && i != 7 && !is_digit(s[i]))
			goto bad;
	int year = atoi(s), month = atoi(s + 5), day = atoi(s + 8);
	if (year < 1 || month < 1 || month > 12 || day < 1)
		goto bad;
	if (day > days_in_month(year, month)) {
		add_error(p, p->line, "planned_date: '%s' is not a date (%s %d has %d days)",
			  show(shown, s, f->len), month_names[month - 1], year,
			  days_in_month(year, month));
		return -1;
	}
	return 0;
bad:
	add_error(p, p->line, "planned_date: '%s' is not a date (YYYY-MM-DD)",
		  show(shown, s, f->len));
	return -1;
}

static size_t host_hash(const char *s)
{
	uint64_t h = 14695981039346656037u; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)lower(*s)) * 1099511628211u;
	return (size_t)h;
}

/* The entry already holding host (any case), or NULL. */
static const struct wave_entry *find_host(const struct parser *p, const char *host)
{
	if (!p->n_slots)
		return NULL;
	for (size_t i = host_hash(host) & (p->n_slots - 1);; i = (i + 1) & (p->n_slots - 1)) {
		if (!p->slots[i])
			return NULL;
		const struct wave_entry *e = &p->entries[p->slots[i] - 1];
		if (ieq(e->host_id, host))
			return e;
	}
}

static void index_entry(struct parser *p, size_t idx)
{
	size_t i = host_hash(p->entries[idx].host_id) & (p->n_slots - 1);
	while (p->slots[i])
		i = (i + 1) & (p->n_slots - 1);
	p->slots[i] = idx + 1;
}

static int add_entry(struct parser *p, const struct wave_entry *e)
{
	if (p->count == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		struct wave_entry *grown = realloc(p->entries, cap * sizeof(*grown));
		if (!grown)
			return UV_ENOMEM;
		p->entries = grown;
		p->cap = cap;
	}
	/* Half full at most, so probes stay short. */
	if ((p->count + 1) * 2 > p->n_slots) {
		size_t n = p->n_slots ? p->n_slots * 2 : 128;
		size_t *slots = calloc(n, sizeof(*slots));
		if (!slots)
			return UV_ENOMEM;
		free(p->slots);
		p->slots = slots;
		p->n_slots = n;
		for (size_t i = 0; i < p->count; i++)
			index_entry(p, i);
	}
	p->entries[p->count] = *e;
	index_entry(p, p->count);
	p->count++;
	return 0;
}

static void read_entry(struct parser *p)
{
	const struct field *host, *wave, *date;
	struct wave_entry e;

	if (p->n_fields != N_COLS) {
		add_error(p, p->line, "%zu field%s, but the header has %d: %s", p->n_fields,
			  p->n_fields == 1 ? "" : "s", N_COLS, p->header_order);
		return;
	}
	host = &p->fields[p->col_field[COL_HOST]];
	wave = &p->fields[p->col_field[COL_WAVE]];
	date = &p->fields[p->col_field[COL_DATE]];
	int host_ok = check_host(p, host) == 0;
	int wave_ok = check_wave(p, wave) == 0;
	int date_ok = check_date(p, date) == 0;
	if (!host_ok)
		return;

	const struct wave_entry *first = find_host(p, host->text);
	if (first) {
		int same_case = strcmp(first->host_id, host->text) == 0;
		if (first->wave[0])
			add_error(p, p->line, "host %s is already in wave %s%s%s (line %u)",
				  host->text, first->wave, same_case ? "" : " as ",
				  same_case ? "" : first->host_id, first->line);
		else
			add_error(p, p->line, "host %s is already listed%s%s (line %u)", host->text,
				  same_case ? "" : " as ", same_case ? "" : first->host_id,
				  first->line);
		return;
	}
	/* A host with a bad wave or date is still recorded, so that a second
	 * listing of it is reported too; nothing is returned after an error. */
	memset(&e, 0, sizeof(e));
	memcpy(e.host_id, host->text, host->len);
	if (wave_ok)
		memcpy(e.wave, wave->text, wave->len);
	if (date_ok)
		memcpy(e.planned_date, date->text, date->len);
	e.line = p->line;
	if (add_entry(p, &e) < 0)
		p->oom = 1;
}

int waves_parse(const char *name, const char *text, size_t len, struct wave_plan *plan,
		struct wave_errors *errors)
{
	struct parser p = {.name = name, .errors = errors};
	size_t pos = 0;
	int rc = 0;

	memset(plan, 0, sizeof(*plan));
	memset(errors, 0, sizeof(*errors));
	if (len > WAVES_MAX_BYTES) {
		add_error(&p, 0, "%zu bytes, over the limit of %u (16 MiB); split the plan", len,
			  WAVES_MAX_BYTES);
		rc = UV_E2BIG;
		goto out;
	}
	if (len >= 2 && ((text[0] == '\xFF' && text[1] == '\xFE') ||
			 (text[0] == '\xFE' && text[1] == '\xFF'))) {
		add_error(&p, 0, "UTF-16 text; save the plan as CSV UTF-8 (comma delimited)");
		rc = UV_EINVAL;
		goto out;
	}
	if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
		pos = 3;
	/* Every line's fields fit in the line's length plus one. */
	p.scratch = malloc(len + 1);
	if (!p.scratch) {
		rc = UV_ENOMEM;
		goto out;
	}
	while (pos < len && !p.oom) {
		size_t start = pos;
		int nul = 0;
		if (p.line == WAVES_MAX_LINES) {
			add_error(&p, p.line + 1, "more than %u lines; split the plan", WAVES_MAX_LINES);
			rc = UV_E2BIG;
			goto out;
		}
		p.line++;
		for (; pos < len && text[pos] != '\n' && text[pos] != '\r'; pos++)
			nul |= text[pos] == '\0';
		size_t end = pos;
		if (pos < len)
			pos += text[pos] == '\r' && pos + 1 < len && text[pos + 1] == '\n' ? 2 : 1;
		if (nul) {
			/* Binary or UTF-16 without a BOM: every line would be wrong. */
			add_error(&p, p.line,
				  "holds a NUL byte; save the plan as CSV UTF-8 (comma delimited)");
			break;
		}
		if (split_line(&p, text + start, end - start) < 0) {
			if (!p.have_header)
				break;
			continue;
		}
		if (all_empty(&p))
			continue;
		if (!p.have_header) {
			if (read_header(&p) < 0)
				break; /* rows mean nothing without their columns */
			continue;
		}
		read_entry(&p);
	}
	if (p.oom) {
		rc = UV_ENOMEM;
		goto out;
	}
	if (!p.have_header && errors->total == 0)
		add_error(&p, 0, "empty; the first line must be the header host,wave,planned_date");
	else if (p.count == 0 && errors->total == 0)
		add_error(&p, 0, "no hosts under the header");
	rc = errors->total ? UV_EINVAL : 0;
out:
	if (errors->total > errors->count) {
		char msg[MSG_LEN];
		snprintf(msg, sizeof(msg), "%s: ... and %zu more errors", name,
			 errors->total - errors->count);
		push_line(&p, msg);
	}
	if (p.oom)
		rc = UV_ENOMEM;
	if (rc == 0) {
		plan->entries = p.entries;
		plan->count = p.count;
		p.entries = NULL;
	}
	free(p.entries);
	free(p.slots);
	free(p.scratch);
	return rc;
}

void wave_plan_free(struct wave_plan *plan)
{
	free(plan->entries);
	plan->entries = NULL;
	plan->count = 0;
}

void wave_errors_free(struct wave_errors *errors)
{
	for (size_t i = 0; i < errors->count; i++)
		free(errors->lines[i]);
	free(errors->lines);
	errors->lines = NULL;
	errors->count = errors->total = 0;
}
