#include "config.h"

#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <ini.h>
#include <uv.h>

#include "log.h"
#include "util.h"

/* Refuses to slurp a mistaken path (a log, a disk image) as a config file. */
#define CONFIG_MAX_FILE (1024 * 1024)
/* Longest name the "did you mean" search compares. */
#define HINT_MAX_NAME 64
/* How much of a value or name an error message quotes. */
#define SHOWN_MAX 80

#define SYNTAX_ERROR "syntax error: expected '[section]' or 'key = value'"

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* The one platform difference here: what separates and roots a path. */
#ifdef _WIN32
static bool is_separator(char c)
{
	return c == '/' || c == '\\';
}

static bool is_absolute(const char *path)
{
	/* "C:x" is relative to drive C's current directory, not to ours. */
	return is_separator(path[0]) || (isalpha((unsigned char)path[0]) && path[1] == ':');
}
#else
static bool is_separator(char c)
{
	return c == '/';
}

static bool is_absolute(const char *path)
{
	return path[0] == '/';
}
#endif

/* One load: the table, the text being read and the first error. */
struct parse {
	const char *name;          /* the file, as the caller named it */
	const char *base_dir;      /* for relative paths; NULL leaves them relative */
	const struct config_key *keys;
	size_t nkeys;
	void *target;
	struct config_error *err;
	int *set_on_line;          /* per key: line that set it, 0 if none did */
	const char *next, *end;    /* text not yet given to inih */
	int lineno;                /* line inih is working on */
	int section_line;          /* line of the latest [section] header */
	bool checking_default;     /* errors concern a built-in default */
	bool failed;
	int err_line;
	int rc;
};

enum parse_result { PARSE_OK = 0, PARSE_BAD = -1, PARSE_OVERFLOW = -2 };

static char ascii_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* strcasecmp is not in C11 nor in MinGW under that name. */
static bool ascii_ieq(const char *a, const char *b)
{
	for (; *a && ascii_lower(*a) == ascii_lower(*b); a++, b++)
		;
	return ascii_lower(*a) == ascii_lower(*b);
}

static char *dup_range(const char *s, size_t len)
{
	char *copy = malloc(len + 1);
	if (copy) {
		memcpy(copy, s, len);
		copy[len] = '\0';
	}
	return copy;
}

/* uv_strerror's text with a capital, as strerror() writes it on Unix, so a
 * message reads the same on every platform: "No such file or directory". */
static const char *error_text(int rc, char *buf, size_t len)
{
	snprintf(buf, len, "%s", uv_strerror(rc));
	buf[0] = (char)toupper((unsigned char)buf[0]);
	return buf;
}

/* Copies text from the file into an error message: control bytes become '?'
 * so the message cannot drive a terminal, and long text is cut. */
static const char *printable(const char *s, char *buf, size_t len)
{
	size_t i;
	for (i = 0; s[i] && i + 1 < len; i++) {
		unsigned char c = (unsigned char)s[i];
		buf[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	buf[i] = '\0';
	if (s[i] && len >= 4)
		memcpy(buf + len - 4, "...", 4);
	return buf;
}

static int vfail(struct parse *p, int line, const struct config_key *key, int rc,
		 const char *fmt, va_list ap) LOG_PRINTF(5, 0);

/* Records the first error as "file[:line]: [section] key: what", the key part
 * only when key is given. Formats in place: truncating a long value is fine. */
static int vfail(struct parse *p, int line, const struct config_key *key, int rc,
		 const char *fmt, va_list ap)
{
	char *msg = p->err->msg;
	size_t size = sizeof(p->err->msg), used;
	if (p->failed)
		return p->rc;
	if (line > 0)
		snprintf(msg, size, "%s:%d: ", p->name, line);
	else
		snprintf(msg, size, "%s: ", p->name);
	used = strlen(msg);
	if (key)
		snprintf(msg + used, size - used, "[%s] %s: ", key->section, key->name);
	used = strlen(msg);
	vsnprintf(msg + used, size - used, fmt, ap);
	used = strlen(msg);
	if (key && p->checking_default)
		snprintf(msg + used, size - used, " (built-in default)");
	p->failed = true;
	p->err_line = line;
	p->rc = rc;
	return rc;
}

static int fail(struct parse *p, int line, int rc, const char *fmt, ...) LOG_PRINTF(4, 5);
static int fail_key(struct parse *p, int line, const struct config_key *key, int rc,
		    const char *fmt, ...) LOG_PRINTF(5, 6);

static int fail(struct parse *p, int line, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	rc = vfail(p, line, NULL, rc, fmt, ap);
	va_end(ap);
	return rc;
}

static int fail_key(struct parse *p, int line, const struct config_key *key, int rc,
		    const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	rc = vfail(p, line, key, rc, fmt, ap);
	va_end(ap);
	return rc;
}

static int fail_nomem(struct parse *p, int line)
{
	return fail(p, line, UV_ENOMEM, "out of memory");
}

/* Optimal string alignment distance (Levenshtein plus swapped neighbours),
 * ignoring ASCII case, so "Host_ID" and "hsot_id" both find "host_id". */
static unsigned edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > HINT_MAX_NAME || lb > HINT_MAX_NAME)
		return UINT_MAX;
	unsigned rows[3][HINT_MAX_NAME + 1];
	unsigned *before = rows[0], *prev = rows[1], *cur = rows[2];
	for (size_t j = 0; j <= lb; j++)
		prev[j] = (unsigned)j;
	for (size_t i = 1; i <= la; i++) {
		cur[0] = (unsigned)i;
		for (size_t j = 1; j <= lb; j++) {
			char ca = ascii_lower(a[i - 1]), cb = ascii_lower(b[j - 1]);
			unsigned cost = ca != cb;
			unsigned d = prev[j - 1] + cost;
			if (prev[j] + 1 < d)
				d = prev[j] + 1;
			if (cur[j - 1] + 1 < d)
				d = cur[j - 1] + 1;
			if (i > 1 && j > 1 && ca == ascii_lower(b[j - 2]) &&
			    ascii_lower(a[i - 2]) == cb && before[j - 2] + cost < d)
				d = before[j - 2] + cost;
			cur[j] = d;
		}
		unsigned *oldest = before;
		before = prev;
		prev = cur;
		cur = oldest;
	}
	return prev[lb];
}

/* A near miss worth suggesting: within two edits, and fewer edits than half
 * the name, so "xy" does not suggest "ca". */
static bool is_near_miss(const char *typed, const char *candidate, unsigned *best)
{
	unsigned d = edit_distance(typed, candidate);
	if (d > 2 || 2 * d >= strlen(candidate) || d >= *best)
		return false;
	*best = d;
	return true;
}

static bool section_exists(const struct parse *p, const char *section)
{
	for (size_t i = 0; i < p->nkeys; i++)
		if (strcmp(p->keys[i].section, section) == 0)
			return true;
	return false;
}

static const struct config_key *find_key(const struct parse *p, const char *section,
					 const char *name)
{
	for (size_t i = 0; i < p->nkeys; i++)
		if (strcmp(p->keys[i].section, section) == 0 && strcmp(p->keys[i].name, name) == 0)
			return &p->keys[i];
	return NULL;
}

/* Reads the decimal digits at the start of s into *out. Returns how many there
 * were; *overflow says the number does not fit in 64 bits. */
static size_t read_digits(const char *s, uint64_t *out, bool *overflow)
{
	uint64_t n = 0;
	size_t i;
	*overflow = false;
	for (i = 0; s[i] >= '0' && s[i] <= '9'; i++) {
		unsigned digit = (unsigned)(s[i] - '0');
		if (n > (UINT64_MAX - digit) / 10)
			*overflow = true;
		else
			n = n * 10 + digit;
	}
	*out = n;
	return i;
}

static enum parse_result parse_int(const char *s, int64_t *out)
{
	bool negative = *s == '-';
	if (*s == '-' || *s == '+')
		s++;
	uint64_t magnitude;
	bool overflow;
	size_t n = read_digits(s, &magnitude, &overflow);
	if (n == 0 || s[n] != '\0')
		return PARSE_BAD;
	uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	if (overflow || magnitude > limit)
		return PARSE_OVERFLOW;
	/* -2^63 has no positive int64 counterpart: negate in unsigned. */
	*out = negative ? (int64_t)(0 - magnitude) : (int64_t)magnitude;
	return PARSE_OK;
}

struct unit {
	const char *suffix;
	uint64_t scale;
};

static const struct unit size_units[] = {
	{ "", 1 },
	{ "K", 1ull << 10 }, { "KiB", 1ull << 10 },
	{ "M", 1ull << 20 }, { "MiB", 1ull << 20 },
	{ "G", 1ull << 30 }, { "GiB", 1ull << 30 },
	{ "T", 1ull << 40 }, { "TiB", 1ull << 40 },
};

static const struct unit duration_units[] = {
	{ "ms", 1 },
	{ "", 1000 },
	{ "s", 1000 },
	{ "m", 60 * 1000 },
	{ "h", 60 * 60 * 1000 },
	{ "d", 24 * 60 * 60 * 1000 },
};

/* A number and one of the suffixes, scaled; overflow is an error, never a wrap. */
static enum parse_result parse_scaled(const char *s, const struct unit *units, size_t nunits,
				      uint64_t *out)
{
	uint64_t n;
	bool overflow;
	size_t len = read_digits(s, &n, &overflow);
	if (len == 0)
		return PARSE_BAD;
	for (size_t i = 0; i < nunits; i++) {
		if (strcmp(s + len, units[i].suffix) != 0)
			continue;
		if (overflow || n > UINT64_MAX / units[i].scale)
			return PARSE_OVERFLOW;
		*out = n * units[i].scale;
		return PARSE_OK;
	}
	return PARSE_BAD;
}

/* Writes v in the largest unit that divides it exactly: 1000 ms is "1s". */
static void format_scaled(uint64_t v, const struct unit *units, size_t nunits, char *buf,
			  size_t len)
{
	const struct unit *best = &units[0];
	for (size_t i = 0; i < nunits; i++)
		if (v != 0 && units[i].scale > best->scale && v % units[i].scale == 0)
			best = &units[i];
	snprintf(buf, len, "%" PRIu64 "%s", v / best->scale, best->suffix);
}

/* A bound as the user would write it. Only the shortest suffixes are offered. */
static void format_amount(enum config_type type, int64_t v, char *buf, size_t len)
{
	static const struct unit sizes[] = { { "", 1 }, { "K", 1ull << 10 }, { "M", 1ull << 20 },
					     { "G", 1ull << 30 }, { "T", 1ull << 40 } };
	static const struct unit durations[] = { { "ms", 1 }, { "s", 1000 }, { "m", 60000 },
						 { "h", 3600000 }, { "d", 86400000 } };
	if (type == CONFIG_SIZE)
		format_scaled((uint64_t)v, sizes, COUNT(sizes), buf, len);
	else if (type == CONFIG_DURATION)
		format_scaled((uint64_t)v, durations, COUNT(durations), buf, len);
	else
		snprintf(buf, len, "%" PRId64, v);
}

static bool is_bounded(const struct config_key *key)
{
	return key->min != 0 || key->max != 0;
}

static int fail_range(struct parse *p, int line, const struct config_key *key, const char *shown,
		      bool below)
{
	char bound[32];
	format_amount(key->type, below ? key->min : key->max, bound, sizeof(bound));
	return fail_key(p, line, key, UV_EINVAL, "'%s' is %s %s", shown,
			below ? "below the minimum" : "above the maximum", bound);
}

static enum parse_result parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };
	for (size_t i = 0; i < COUNT(yes); i++) {
		if (ascii_ieq(s, yes[i])) {
			*out = true;
			return PARSE_OK;
		}
		if (ascii_ieq(s, no[i])) {
			*out = false;
			return PARSE_OK;
		}
	}
	return PARSE_BAD;
}

static void list_clear(struct config_list *list)
{
	for (size_t i = 0; i < list->count; i++)
		free(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

/* Splits "a, b ,c" into trimmed items. Returns PARSE_BAD for an empty item. */
static int parse_list(const char *s, struct config_list *out)
{
	struct config_list list = { NULL, 0 };
	size_t n = 1;
	int rc = PARSE_OK;
	for (const char *c = s; *c; c++)
		n += *c == ',';
	list.items = calloc(n, sizeof(*list.items));
	if (!list.items)
		return UV_ENOMEM;
	for (const char *item = s;; item++) {
		const char *comma = strchr(item, ',');
		const char *stop = comma ? comma : item + strlen(item);
		while (item < stop && isspace((unsigned char)*item))
			item++;
		while (stop > item && isspace((unsigned char)stop[-1]))
			stop--;
		if (stop == item) {
			rc = PARSE_BAD;
			goto out;
		}
		list.items[list.count] = dup_range(item, (size_t)(stop - item));
		if (!list.items[list.count]) {
			rc = UV_ENOMEM;
			goto out;
		}
		list.count++;
		if (!comma)
			break;
		item = comma;
	}
	*out = list;
	list.items = NULL;
	list.count = 0;
out:
	list_clear(&list);
	return rc;
}

static char *resolve_path(const char *base_dir, const char *path)
{
	if (!base_dir || !*base_dir || is_absolute(path))
		return dup_range(path, strlen(path));
	size_t dlen = strlen(base_dir), plen = strlen(path);
	size_t sep = is_separator(base_dir[dlen - 1]) ? 0 : 1;
	char *joined = malloc(dlen + sep + plen + 1);
	if (!joined)
		return NULL;
	memcpy(joined, base_dir, dlen);
	joined[dlen] = '/';
	memcpy(joined + dlen + sep, path, plen + 1);
	return joined;
}

/* The directory part of path, or NULL for a bare file name (that is the
 * current directory, where relative paths already point). */
static char *dir_of(const char *path, bool *nomem)
{
	size_t len = strlen(path);
	*nomem = false;
	while (len > 0 && !is_separator(path[len - 1]))
		len--;
	if (len == 0)
		return NULL;
	if (len > 1)
		len--; /* drop the separator, but keep a lone root "/" */
	char *dir = dup_range(path, len);
	*nomem = dir == NULL;
	return dir;
}

static void join_choices(const char *const *choices, char *buf, size_t len)
{
	size_t used = 0;
	for (size_t i = 0; choices[i]; i++) {
		const char *parts[] = { i ? ", " : "", choices[i] };
		for (size_t k = 0; k < 2; k++)
			for (const char *c = parts[k]; *c && used + 1 < len; c++)
				buf[used++] = *c;
	}
	buf[used] = '\0';
}

/* Parses value by the key's type and stores it. line 0 means a default. */
static int set_value(struct parse *p, const struct config_key *key, const char *value, int line)
{
	void *field = (char *)p->target + key->offset;
	char shown[SHOWN_MAX];
	printable(value, shown, sizeof(shown));

	switch (key->type) {
	case CONFIG_STRING:
	case CONFIG_PATH: {
		char *text = NULL;
		if (*value) {
			text = key->type == CONFIG_PATH ? resolve_path(p->base_dir, value)
							: dup_range(value, strlen(value));
			if (!text)
				return fail_nomem(p, line);
		}
		char **slot = field;
		free(*slot);
		*slot = text;
		return 0;
	}
	case CONFIG_INT: {
		int64_t v;
		enum parse_result r = parse_int(value, &v);
		if (r == PARSE_BAD)
			return fail_key(p, line, key, UV_EINVAL, "'%s' is not an integer", shown);
		if (r == PARSE_OVERFLOW)
			return fail_key(p, line, key, UV_EINVAL, "'%s' is out of range", shown);
		if (is_bounded(key) && (v < key->min || v > key->max))
			return fail_range(p, line, key, shown, v < key->min);
		*(int64_t *)field = v;
		return 0;
	}
	case CONFIG_BOOL:
		if (parse_bool(value, (bool *)field) != PARSE_OK)
			return fail_key(p, line, key, UV_EINVAL,
					"'%s' is not a boolean (true or false)", shown);
		return 0;
	case CONFIG_SIZE:
	case CONFIG_DURATION: {
		bool is_size = key->type == CONFIG_SIZE;
		uint64_t v;
		enum parse_result r =
			is_size ? parse_scaled(value, size_units, COUNT(size_units), &v)
				: parse_scaled(value, duration_units, COUNT(duration_units), &v);
		if (r == PARSE_BAD)
			return fail_key(p, line, key, UV_EINVAL, "'%s' is not a %s", shown,
					is_size ? "size (e.g. 64M)" : "duration (e.g. 30s)");
		if (r == PARSE_OVERFLOW)
			return fail_key(p, line, key, UV_EINVAL, "'%s' is too large", shown);
		/* The key table guarantees 0 <= min <= max for these types. */
		if (is_bounded(key) && (v < (uint64_t)key->min || v > (uint64_t)key->max))
			return fail_range(p, line, key, shown, v < (uint64_t)key->min);
		*(uint64_t *)field = v;
		return 0;
	}
	case CONFIG_LIST: {
		struct config_list list = { NULL, 0 };
		int rc = *value ? parse_list(value, &list) : 0;
		if (rc == PARSE_BAD)
			return fail_key(p, line, key, UV_EINVAL, "'%s' has an empty item", shown);
		if (rc < 0)
			return fail_nomem(p, line);
		list_clear(field);
		*(struct config_list *)field = list;
		return 0;
	}
	case CONFIG_ENUM: {
		char names[256];
		for (size_t i = 0; key->choices[i]; i++) {
			if (strcmp(value, key->choices[i]) == 0) {
				*(int *)field = (int)i;
				return 0;
			}
		}
		join_choices(key->choices, names, sizeof(names));
		return fail_key(p, line, key, UV_EINVAL, "'%s' is not one of: %s", shown, names);
	}
	}
	return fail_key(p, line, key, UV_EINVAL, "unknown type %d", (int)key->type);
}

/* Opening, not stat alone, proves we may read the file. */
static int check_readable(const char *path, char *msg, size_t len)
{
	char reason[128];
	uv_fs_t req;
	int rc = uv_fs_open(NULL, &req, path, UV_FS_O_RDONLY, 0, NULL);
	uv_fs_req_cleanup(&req);
	if (rc < 0) {
		snprintf(msg, len, "cannot read %s: %s", path,
			 error_text(rc, reason, sizeof(reason)));
		return rc;
	}
	uv_file fd = rc;
	rc = uv_fs_fstat(NULL, &req, fd, NULL);
	if (rc == 0 && (req.statbuf.st_mode & S_IFMT) == S_IFDIR) {
		snprintf(msg, len, "cannot read %s: it is a directory", path);
		rc = UV_EISDIR;
	} else if (rc < 0) {
		snprintf(msg, len, "cannot read %s: %s", path,
			 error_text(rc, reason, sizeof(reason)));
	}
	uv_fs_req_cleanup(&req);
	uv_fs_close(NULL, &req, fd, NULL);
	uv_fs_req_cleanup(&req);
	return rc;
}

static int check_file(struct parse *p, const struct config_key *key, int line)
{
	/* Only a path's field holds a pointer: another type's is not read as one. */
	if (key->type != CONFIG_PATH || !(key->flags & (CONFIG_MUST_EXIST | CONFIG_PRIVATE_KEY)))
		return 0;
	void *field = (char *)p->target + key->offset;
	const char *path = *(char **)field;
	char msg[sizeof(p->err->msg)];
	if (!path)
		return 0;
	int rc = check_readable(path, msg, sizeof(msg));
	if (rc == 0 && (key->flags & CONFIG_PRIVATE_KEY))
		rc = util_check_private_file(path, msg, sizeof(msg));
	if (rc < 0)
		return fail_key(p, line, key, rc, "%s", msg);
	return 0;
}

/* One "key = value" line, handed over by inih. */
static int apply_pair(struct parse *p, const char *section, const char *name, const char *value)
{
	char shown_section[SHOWN_MAX], shown_name[SHOWN_MAX], hint[SHOWN_MAX + 32] = "";
	int line = p->lineno;
	unsigned best = UINT_MAX;

	/* No value: inih built with INI_ALLOW_NO_VALUE; an empty name: "= x". */
	if (!value || !*name)
		return fail(p, line, UV_EINVAL, SYNTAX_ERROR);
	printable(name, shown_name, sizeof(shown_name));
	if (!*section)
		return fail(p, line, UV_EINVAL,
			    "key '%s' is outside any section; put it under a [section] line",
			    shown_name);
	printable(section, shown_section, sizeof(shown_section));
	if (!section_exists(p, section)) {
		for (size_t i = 0; i < p->nkeys; i++)
			if (is_near_miss(section, p->keys[i].section, &best))
				snprintf(hint, sizeof(hint), "; did you mean [%s]?",
					 p->keys[i].section);
		return fail(p, p->section_line, UV_EINVAL, "unknown section [%s]%s", shown_section,
			    hint);
	}
	const struct config_key *key = find_key(p, section, name);
	if (!key) {
		for (size_t i = 0; i < p->nkeys; i++)
			if (strcmp(p->keys[i].section, section) == 0 &&
			    is_near_miss(name, p->keys[i].name, &best))
				snprintf(hint, sizeof(hint), "; did you mean '%s'?",
					 p->keys[i].name);
		return fail(p, line, UV_EINVAL, "[%s] unknown key '%s'%s", shown_section,
			    shown_name, hint);
	}
	size_t index = (size_t)(key - p->keys);
	if (p->set_on_line[index])
		return fail_key(p, line, key, UV_EINVAL, "set twice (first on line %d)",
				p->set_on_line[index]);
	p->set_on_line[index] = line;
	if (!*value && (key->flags & CONFIG_REQUIRED))
		return fail_key(p, line, key, UV_EINVAL, "a value is required");
	int rc = set_value(p, key, value, line);
	if (rc == 0)
		rc = check_file(p, key, line);
	return rc;
}

static int pair_cb(void *user, const char *section, const char *name, const char *value)
{
	struct parse *p = user;
	/* name is NULL at a new section in builds with INI_CALL_HANDLER_ON_NEW_SECTION. */
	if (p->failed || !name)
		return 1;
	return apply_pair(p, section, name, value) == 0;
}

/* Gives inih one line per call, so its line count and ours agree (inih itself
 * splits a long line into several). The line goes without its leading blanks:
 * inih would take an indented line as the continuation of the previous value,
 * and an indented key would silently join it. The BOM is removed here so the
 * result does not depend on how inih was built. After an error it ends the
 * text, so the first error is the one reported. */
static char *read_line_cb(char *buf, int size, void *stream)
{
	struct parse *p = stream;
	if (p->failed || p->next >= p->end)
		return NULL;
	const char *line = p->next;
	const char *newline = memchr(line, '\n', (size_t)(p->end - line));
	const char *stop = newline ? newline : p->end;
	p->next = newline ? newline + 1 : p->end;
	p->lineno++;

	if (p->lineno == 1 && stop - line >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
		line += 3;
	while (line < stop && isspace((unsigned char)*line))
		line++;
	while (stop > line && isspace((unsigned char)stop[-1]))
		stop--;
	size_t len = (size_t)(stop - line);
	/* Room for the line, its '\n' and the terminating NUL. */
	if (size < 2 || len > (size_t)size - 2) {
		fail(p, p->lineno, UV_EINVAL, "line is longer than %d characters",
		     size > 2 ? size - 2 : 0);
		return NULL;
	}
	memcpy(buf, line, len);
	buf[len] = '\n';
	buf[len + 1] = '\0';
	if (len > 0 && line[0] == '[')
		p->section_line = p->lineno;
	return buf;
}

/* Mistakes in the key table are the program's, found on its first run. */
static int check_table(struct parse *p)
{
	for (size_t i = 0; i < p->nkeys; i++) {
		const struct config_key *key = &p->keys[i];
		const char *problem = NULL;
		if (!key->section || !key->name || !*key->section || !*key->name)
			return fail(p, 0, UV_EINVAL, "key table: entry %zu has no section or name",
				    i);
		if ((unsigned)key->type > CONFIG_ENUM)
			problem = "has an unknown type";
		else if (key->type == CONFIG_ENUM && !key->choices)
			problem = "is an ENUM without choices";
		else if (is_bounded(key) && key->min > key->max)
			problem = "has min above max";
		else if ((key->type == CONFIG_SIZE || key->type == CONFIG_DURATION) && key->min < 0)
			problem = "has a negative min";
		else if ((key->flags & CONFIG_REQUIRED) && key->default_value)
			problem = "is required but has a default";
		else if ((key->flags & (CONFIG_MUST_EXIST | CONFIG_PRIVATE_KEY)) &&
			 key->type != CONFIG_PATH)
			problem = "has a file check but is not a PATH";
		for (size_t j = 0; !problem && j < i; j++)
			if (strcmp(p->keys[j].section, key->section) == 0 &&
			    strcmp(p->keys[j].name, key->name) == 0)
				problem = "is listed twice";
		if (problem)
			return fail(p, 0, UV_EINVAL, "key table: [%s] %s %s", key->section,
				    key->name, problem);
	}
	return 0;
}

/* Sets every field the table names to empty, so config_free is always safe. */
static void clear_target(const struct config_key *keys, size_t nkeys, void *target)
{
	for (size_t i = 0; i < nkeys; i++) {
		void *field = (char *)target + keys[i].offset;
		switch (keys[i].type) {
		case CONFIG_STRING:
		case CONFIG_PATH:
			*(char **)field = NULL;
			break;
		case CONFIG_INT:
			*(int64_t *)field = 0;
			break;
		case CONFIG_BOOL:
			*(bool *)field = false;
			break;
		case CONFIG_SIZE:
		case CONFIG_DURATION:
			*(uint64_t *)field = 0;
			break;
		case CONFIG_LIST:
			*(struct config_list *)field = (struct config_list){ NULL, 0 };
			break;
		case CONFIG_ENUM:
			*(int *)field = 0;
			break;
		}
	}
}

static int load(struct parse *p, const char *text, size_t len)
{
	int rc = check_table(p);
	if (rc < 0)
		return rc;
	p->set_on_line = calloc(p->nkeys ? p->nkeys : 1, sizeof(*p->set_on_line));
	if (!p->set_on_line)
		return fail_nomem(p, 0);

	p->checking_default = true;
	for (size_t i = 0; i < p->nkeys && rc == 0; i++)
		if (p->keys[i].default_value)
			rc = set_value(p, &p->keys[i], p->keys[i].default_value, 0);
	p->checking_default = false;
	if (rc < 0)
		goto out;

	p->next = text;
	p->end = text + len;
	int first_error = ini_parse_stream(read_line_cb, p, pair_cb, p);
	/* inih goes on after a syntax error, so ours may be on a later line. */
	if (first_error > 0 && (!p->failed || first_error < p->err_line)) {
		p->failed = false;
		rc = fail(p, first_error, UV_EINVAL, SYNTAX_ERROR);
		goto out;
	}
	if (first_error < 0)
		fail_nomem(p, 0);
	if (p->failed) {
		rc = p->rc;
		goto out;
	}

	for (size_t i = 0; i < p->nkeys; i++) {
		if ((p->keys[i].flags & CONFIG_REQUIRED) && !p->set_on_line[i]) {
			rc = fail_key(p, 0, &p->keys[i], UV_EINVAL, "required key is missing");
			goto out;
		}
	}
	/* Defaults the file kept are checked only now: one it replaced need not exist. */
	p->checking_default = true;
	for (size_t i = 0; i < p->nkeys && rc == 0; i++)
		if (!p->set_on_line[i])
			rc = check_file(p, &p->keys[i], 0);
	p->checking_default = false;
out:
	free(p->set_on_line);
	p->set_on_line = NULL;
	return rc;
}

int config_load_string(const char *text, const char *name, const char *base_dir,
		       const struct config_key *keys, size_t nkeys, void *target,
		       struct config_error *err)
{
	struct config_error scratch;
	struct parse p = {
		.name = name ? name : "(config)",
		.base_dir = base_dir,
		.keys = keys,
		.nkeys = nkeys,
		.target = target,
		.err = err ? err : &scratch,
	};
	p.err->msg[0] = '\0';
	clear_target(keys, nkeys, target);
	return load(&p, text, strlen(text));
}

int config_load(const char *path, const struct config_key *keys, size_t nkeys, void *target,
		struct config_error *err)
{
	struct config_error scratch;
	struct parse p = {
		.name = path,
		.keys = keys,
		.nkeys = nkeys,
		.target = target,
		.err = err ? err : &scratch,
	};
	char *text = NULL, *dir = NULL, ignored[256], reason[128];
	size_t len = 0;
	bool nomem;

	p.err->msg[0] = '\0';
	clear_target(keys, nkeys, target);
	int rc = util_read_file(path, CONFIG_MAX_FILE, &text, &len, ignored, sizeof(ignored));
	if (rc < 0) {
		fail(&p, 0, rc, "cannot read: %s", error_text(rc, reason, sizeof(reason)));
		goto out;
	}
	/* A NUL would silently end the text inih sees: UTF-16 or a binary file. */
	const char *nul = memchr(text, '\0', len);
	if (nul) {
		int line = 1;
		for (const char *c = text; c < nul; c++)
			line += *c == '\n';
		rc = fail(&p, line, UV_EINVAL, "contains a NUL byte; save the file as UTF-8 text");
		goto out;
	}
	dir = dir_of(path, &nomem);
	if (nomem) {
		rc = fail_nomem(&p, 0);
		goto out;
	}
	p.base_dir = dir;
	rc = load(&p, text, len);
out:
	free(dir);
	free(text);
	return rc;
}

void config_free(const struct config_key *keys, size_t nkeys, void *target)
{
	for (size_t i = 0; i < nkeys; i++) {
		void *field = (char *)target + keys[i].offset;
		if (keys[i].type == CONFIG_STRING || keys[i].type == CONFIG_PATH) {
			free(*(char **)field);
			*(char **)field = NULL;
		} else if (keys[i].type == CONFIG_LIST) {
			list_clear(field);
		}
	}
}

static void describe_type(const struct config_key *key, char *buf, size_t len)
{
	char names[256];
	switch (key->type) {
	case CONFIG_STRING:
		snprintf(buf, len, "string");
		break;
	case CONFIG_PATH:
		snprintf(buf, len, "path (a relative one starts from this file's directory)");
		break;
	case CONFIG_INT:
		snprintf(buf, len, "integer");
		break;
	case CONFIG_BOOL:
		snprintf(buf, len, "boolean: true/false, yes/no, on/off, 1/0");
		break;
	case CONFIG_SIZE:
		snprintf(buf, len, "size: 4096, 64K, 64M, 1G (K = 1024)");
		break;
	case CONFIG_DURATION:
		snprintf(buf, len, "duration: 500ms, 10s, 5m, 1h, 2d (a bare number is seconds)");
		break;
	case CONFIG_LIST:
		snprintf(buf, len, "comma-separated list");
		break;
	case CONFIG_ENUM:
		join_choices(key->choices, names, sizeof(names));
		snprintf(buf, len, "one of: %s", names);
		break;
	default:
		snprintf(buf, len, "unknown type");
		break;
	}
}

static void print_key(FILE *out, const struct config_key *key)
{
	char type[320], low[32], high[32];
	describe_type(key, type, sizeof(type));
	if (key->help)
		fprintf(out, "# %s\n", key->help);
	fprintf(out, "# %s", type);
	if (is_bounded(key)) {
		format_amount(key->type, key->min, low, sizeof(low));
		format_amount(key->type, key->max, high, sizeof(high));
		fprintf(out, "; from %s to %s", low, high);
	}
	if (key->flags & CONFIG_REQUIRED)
		fprintf(out, "; required");
	if (key->flags & CONFIG_PRIVATE_KEY)
		fprintf(out, "; the file must be readable by its owner only");
	else if (key->flags & CONFIG_MUST_EXIST)
		fprintf(out, "; the file must exist");
	if (key->default_value)
		fprintf(out, "\n#%s = %s\n", key->name, key->default_value);
	else
		fprintf(out, "\n#%s =\n", key->name);
}

void config_print_reference(FILE *out, const struct config_key *keys, size_t nkeys)
{
	bool first = true;
	for (size_t i = 0; i < nkeys; i++) {
		/* Sections in the order they first appear; each printed once. */
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++)
			seen = strcmp(keys[j].section, keys[i].section) == 0;
		if (seen)
			continue;
		fprintf(out, "%s[%s]\n", first ? "" : "\n", keys[i].section);
		first = false;
		for (size_t j = i, n = 0; j < nkeys; j++) {
			if (strcmp(keys[j].section, keys[i].section) != 0)
				continue;
			fprintf(out, "%s", n++ ? "\n" : "");
			print_key(out, &keys[j]);
		}
	}
}
