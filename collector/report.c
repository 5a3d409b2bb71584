/* Wave report: numbers in report_build, words and layout in the writers.
 * See report.h for what each number means. */
#include "report.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "log.h"
#include "status.h"
#include "util.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define NONE_LABEL "(none)"
#define TOTAL_LABEL "(total)"
#define TIME_LEN 32
#define DUR_LEN 32
#define CELL_LEN 64

/* Worst first: the order of the attention list; HEALTHY and REPAIRED hosts
 * are in it only when offline. */
static const int attention_rank[REPORT_N_STATES] = {
	[HOST_AFFECTED] = 0, [HOST_NEEDS_SP_REINSTALL] = 1, [HOST_AT_RISK] = 2,
	[HOST_DEGRADED] = 3, [HOST_REPAIRING] = 4,          [REPORT_NEVER_SEEN] = 5,
	[HOST_HEALTHY] = 6,  [HOST_REPAIRED] = 6,
};

static const char *state_name(int state)
{
	return state == REPORT_NEVER_SEEN ? "NEVER_SEEN" : host_status_name((enum host_status)state);
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int ieq(const char *a, const char *b)
{
	for (; *a && *b; a++, b++)
		if (lower(*a) != lower(*b))
			return 0;
	return *a == *b;
}

static int empty(const char *s)
{
	return !s || !*s;
}

/* ---- strings from hosts ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left) and its code point,
 * or 0 for a byte that starts none. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
	unsigned char c = s[0];
	size_t len;
	uint32_t v, min;

	if (c < 0x80) {
		*cp = c;
		return 1;
	} else if (c >= 0xC2 && c <= 0xDF) {
		len = 2, v = c & 0x1F, min = 0x80;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3, v = c & 0x0F, min = 0x800;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4, v = c & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3F);
	}
	if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
		return 0;
	*cp = v;
	return len;
}

/* A copy fit for any output: see report.h. NULL: "". */
static char *clean_dup(const char *s)
{
	const unsigned char *in = (const unsigned char *)(s ? s : "");
	size_t n = strlen((const char *)in), o = 0;
	char *out = malloc(3 * n + 1); /* U+FFFD is 3 bytes; no input byte gives more */

	if (!out)
		return NULL;
	for (size_t i = 0; i < n;) {
		uint32_t cp = 0;
		size_t len = utf8_next(in + i, n - i, &cp);
		if (len && (cp == '\t' || cp == '\n' || cp == '\r')) {
			out[o++] = ' ';
		} else if (len == 0 || cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F)) {
			memcpy(out + o, "\xEF\xBF\xBD", 3);
			o += 3;
		} else {
			memcpy(out + o, in + i, len);
			o += len;
		}
		i += len ? len : 1;
	}
	out[o] = '\0';
	return out;
}

/* Display width in a terminal, near enough: code points. */
static size_t text_width(const char *s)
{
	size_t w = 0;
	for (; *s; s++)
		w += ((unsigned char)*s & 0xC0) != 0x80;
	return w;
}

/* Digit runs compare as numbers, the rest without case; ties by bytes so
 * that different names never compare equal. */
static int natural_cmp(const char *a, const char *b)
{
	const char *a0 = a, *b0 = b;

	while (*a && *b) {
		if (is_digit(*a) && is_digit(*b)) {
			while (*a == '0' && is_digit(a[1]))
				a++;
			while (*b == '0' && is_digit(b[1]))
				b++;
			size_t na = 0, nb = 0;
			while (is_digit(a[na]))
				na++;
			while (is_digit(b[nb]))
				nb++;
			if (na != nb)
				return na < nb ? -1 : 1;
			int c = memcmp(a, b, na);
			if (c)
				return c;
			a += na;
			b += nb;
			continue;
		}
		if (lower(*a) != lower(*b))
			return (unsigned char)lower(*a) < (unsigned char)lower(*b) ? -1 : 1;
		a++;
		b++;
	}
	if (*a || *b)
		return *a ? 1 : -1;
	return strcmp(a0, b0);
}

/* ---- building ---- */

struct item {
	const struct report_host *h;
	char *wave; /* cleaned; NULL: no wave */
	int state;
	int connectivity;
};

static int item_cmp(const void *pa, const void *pb)
{
	const struct item *a = pa, *b = pb;
	if (!a->wave || !b->wave)
		return !a->wave - !b->wave; /* no wave last */
	return natural_cmp(a->wave, b->wave);
}

struct durations {
	int64_t *ms;
	size_t n;
};

static int64_t nearest_rank(const int64_t *sorted, size_t n, unsigned pct)
{
	size_t rank = (pct * n + 99) / 100;
	return sorted[rank ? rank - 1 : 0];
}

static int cmp_i64(const void *pa, const void *pb)
{
	int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
	return (a > b) - (a < b);
}

static void summarize(struct durations *d, struct report_duration *out)
{
	memset(out, 0, sizeof(*out));
	if (!d->n)
		return;
	qsort(d->ms, d->n, sizeof(*d->ms), cmp_i64);
	out->hosts = d->n;
	out->median_ms = nearest_rank(d->ms, d->n, 50);
	out->p90_ms = nearest_rank(d->ms, d->n, 90);
}

static int is_date(const char *s)
{
	if (empty(s) || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
		return 0;
	for (int i = 0; i < 10; i++)
		if (i != 4 && i != 7 && !is_digit(s[i]))
			return 0;
	return 1;
}

/* Adds one host to a wave's counts (or the fleet's); detect and repair
 * collect its durations. */
static void count_host(struct report_wave *w, const struct item *it, struct durations *detect,
		       struct durations *repair)
{
	const struct report_host *h = it->h;

	w->hosts++;
	w->states[it->state]++;
	if (it->connectivity == CONN_OFFLINE)
		w->offline++;
	if (h->promoted_at_ms > 0) {
		w->promoted++;
		if (it->state == HOST_HEALTHY || it->state == HOST_REPAIRED)
			w->done++;
	}
	/* An end before its start contradicts the definitions: left out. */
	if (h->promoted_at_ms > 0 && h->detected_at_ms >= h->promoted_at_ms)
		detect->ms[detect->n++] = h->detected_at_ms - h->promoted_at_ms;
	if (h->detected_at_ms > 0 && h->repaired_at_ms >= h->detected_at_ms)
		repair->ms[repair->n++] = h->repaired_at_ms - h->detected_at_ms;
	if (is_date(h->planned_date)) {
		if (!w->planned_first[0] || strcmp(h->planned_date, w->planned_first) < 0)
			memcpy(w->planned_first, h->planned_date, 11);
		if (!w->planned_last[0] || strcmp(h->planned_date, w->planned_last) > 0)
			memcpy(w->planned_last, h->planned_date, 11);
	}
}

static void finish_wave(struct report_wave *w, struct durations *detect, struct durations *repair)
{
	w->done_permille = w->hosts ? (int)((w->done * 2000 + w->hosts) / (w->hosts * 2)) : -1;
	summarize(detect, &w->detect);
	summarize(repair, &w->repair);
}

static int needs_attention(const struct item *it)
{
	switch (it->state) {
	case HOST_AFFECTED:
	case HOST_NEEDS_SP_REINSTALL:
	case HOST_AT_RISK:
	case HOST_DEGRADED:
	case HOST_REPAIRING:
		return 1;
	default:
		/* Silence matters for a host that is due to be promoted. */
		return it->wave && (it->state == REPORT_NEVER_SEEN ||
				    it->connectivity == CONN_OFFLINE);
	}
}

static int attention_cmp(const void *pa, const void *pb)
{
	const struct report_attention *a = pa, *b = pb;
	if (attention_rank[a->state] != attention_rank[b->state])
		return attention_rank[a->state] - attention_rank[b->state];
	return natural_cmp(a->host_id, b->host_id);
}

static int add_attention(struct report_wave *w, const struct item *it)
{
	struct report_attention *a = &w->attention[w->n_attention];
	const struct report_host *h = it->h;

	memset(a, 0, sizeof(*a));
	w->n_attention++;
	a->state = it->state;
	a->connectivity = it->connectivity;
	a->host_id = clean_dup(h->host_id);
	a->site = clean_dup(h->site);
	if (!a->host_id || !a->site)
		return UV_ENOMEM;
	if (h->n_evidence) {
		a->evidence = calloc(h->n_evidence, sizeof(*a->evidence));
		if (!a->evidence)
			return UV_ENOMEM;
	}
	for (size_t i = 0; i < h->n_evidence; i++) {
		a->evidence[i] = clean_dup(h->evidence[i]);
		if (!a->evidence[i])
			return UV_ENOMEM;
		a->n_evidence++;
	}
	return 0;
}

/* Reads a host's names into it; UV_EINVAL with err for a name not known. */
static int classify(const struct report_host *h, size_t idx, struct item *it, char *err,
		    size_t errlen)
{
	int conn = -1;

	if (empty(h->host_id)) {
		snprintf(err, errlen, "host %zu of the report has no host id", idx + 1);
		return UV_EINVAL;
	}
	it->h = h;
	it->state = REPORT_NEVER_SEEN;
	if (h->status) {
		it->state = host_status_parse(h->status);
		if (it->state < 0) {
			snprintf(err, errlen, "host %.64s: status '%.32s' is not known", h->host_id,
				 h->status);
			return UV_EINVAL;
		}
	}
	if (h->connectivity) {
		for (int c = CONN_ONLINE; c <= CONN_NEVER_SEEN; c++)
			if (ieq(h->connectivity, connectivity_name((enum connectivity)c)))
				conn = c;
		if (conn < 0) {
			snprintf(err, errlen, "host %.64s: connectivity '%.32s' is not known",
				 h->host_id, h->connectivity);
			return UV_EINVAL;
		}
	} else {
		conn = h->status ? CONN_ONLINE : CONN_NEVER_SEEN;
	}
	it->connectivity = conn;
	if (conn == CONN_NEVER_SEEN)
		it->state = REPORT_NEVER_SEEN;
	return 0;
}

static int selected(const struct report_host *h, const char *only_wave)
{
	if (!only_wave)
		return 1;
	if (empty(h->wave))
		return strcmp(only_wave, NONE_LABEL) == 0;
	return strcmp(h->wave, only_wave) == 0;
}

int report_build(const struct report_host *hosts, size_t n, const char *only_wave,
		 int64_t generated_at_ms, struct report **out, char *err, size_t errlen)
{
	struct report *r = calloc(1, sizeof(*r));
	struct item *items = calloc(n ? n : 1, sizeof(*items));
	struct durations detect = {0}, repair = {0}, all_detect = {0}, all_repair = {0};
	size_t n_items = 0;
	int rc = UV_ENOMEM;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	if (n > SIZE_MAX / sizeof(int64_t))
		goto out;
	detect.ms = malloc((n ? n : 1) * sizeof(int64_t));
	repair.ms = malloc((n ? n : 1) * sizeof(int64_t));
	all_detect.ms = malloc((n ? n : 1) * sizeof(int64_t));
	all_repair.ms = malloc((n ? n : 1) * sizeof(int64_t));
	if (!r || !items || !detect.ms || !repair.ms || !all_detect.ms || !all_repair.ms)
		goto out;
	r->generated_at_ms = generated_at_ms;
	if (only_wave && !(r->only_wave = clean_dup(only_wave)))
		goto out;
	r->total.name = strdup(TOTAL_LABEL);
	if (!r->total.name)
		goto out;

	for (size_t i = 0; i < n; i++) {
		struct item it = {0};
		rc = classify(&hosts[i], i, &it, err, errlen);
		if (rc < 0)
			goto out;
		rc = UV_ENOMEM;
		if (!selected(&hosts[i], only_wave))
			continue;
		if (!empty(hosts[i].wave) && !(it.wave = clean_dup(hosts[i].wave)))
			goto out;
		items[n_items++] = it;
	}
	qsort(items, n_items, sizeof(*items), item_cmp);

	for (size_t i = 0; i < n_items; i++)
		if (i == 0 || item_cmp(&items[i - 1], &items[i]) != 0)
			r->n_waves++;
	r->waves = calloc(r->n_waves ? r->n_waves : 1, sizeof(*r->waves));
	if (!r->waves)
		goto out;

	for (size_t i = 0, wi = 0; i < n_items; wi++) {
		struct report_wave *w = &r->waves[wi];
		size_t end = i + 1;
		while (end < n_items && item_cmp(&items[i], &items[end]) == 0)
			end++;
		w->no_wave = !items[i].wave;
		w->name = strdup(items[i].wave ? items[i].wave : NONE_LABEL);
		w->attention = calloc(end - i, sizeof(*w->attention));
		if (!w->name || !w->attention)
			goto out;
		detect.n = repair.n = 0;
		for (; i < end; i++) {
			count_host(w, &items[i], &detect, &repair);
			count_host(&r->total, &items[i], &all_detect, &all_repair);
			if (needs_attention(&items[i]) && add_attention(w, &items[i]) < 0)
				goto out;
		}
		finish_wave(w, &detect, &repair);
		qsort(w->attention, w->n_attention, sizeof(*w->attention), attention_cmp);
	}
	finish_wave(&r->total, &all_detect, &all_repair);
	*out = r;
	r = NULL;
	rc = 0;
out:
	if (rc == UV_ENOMEM && err && errlen)
		snprintf(err, errlen, "out of memory building the report of %zu hosts", n);
	for (size_t i = 0; i < n_items; i++)
		free(items[i].wave);
	free(items);
	free(detect.ms);
	free(repair.ms);
	free(all_detect.ms);
	free(all_repair.ms);
	report_free(r);
	return rc;
}

static void wave_free(struct report_wave *w)
{
	for (size_t i = 0; i < w->n_attention; i++) {
		struct report_attention *a = &w->attention[i];
		for (size_t j = 0; j < a->n_evidence; j++)
			free(a->evidence[j]);
		free(a->evidence);
		free(a->host_id);
		free(a->site);
	}
	free(w->attention);
	free(w->name);
}

void report_free(struct report *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_waves; i++)
		wave_free(&r->waves[i]);
	free(r->waves);
	wave_free(&r->total);
	free(r->only_wave);
	free(r);
}

int report_format_parse(const char *name)
{
	static const char *const names[] = {
		[REPORT_TABLE] = "table", [REPORT_CSV] = "csv",
		[REPORT_JSON] = "json",   [REPORT_HTML] = "html",
	};
	for (size_t i = 0; name && i < N_OF(names); i++)
		if (ieq(name, names[i]))
			return (int)i;
	return -1;
}

/* ---- words shared by the writers ---- */

/* "45s", "12m 05s", "3h 07m", "2d 04h": two units are enough to compare. */
static void fmt_duration(int64_t ms, char *buf, size_t len)
{
	long long s = (long long)(ms / 1000);
	if (s < 60)
		snprintf(buf, len, "%llds", s);
	else if (s < 3600)
		snprintf(buf, len, "%lldm %02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%lldh %02lldm", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, len, "%lldd %02lldh", s / 86400, s % 86400 / 3600);
}

static void fmt_percent(const struct report_wave *w, char *buf, size_t len)
{
	if (w->done_permille < 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%d.%d%%", w->done_permille / 10, w->done_permille % 10);
}

static void fmt_planned(const struct report_wave *w, char *buf, size_t len)
{
	if (!w->planned_first[0])
		snprintf(buf, len, "-");
	else if (strcmp(w->planned_first, w->planned_last) == 0)
		snprintf(buf, len, "%s", w->planned_first);
	else
		snprintf(buf, len, "%s..%s", w->planned_first, w->planned_last);
}

static void fmt_median(const struct report_duration *d, char *buf, size_t len)
{
	if (d->hosts)
		fmt_duration(d->median_ms, buf, len);
	else
		snprintf(buf, len, "-");
}

static void fmt_p90(const struct report_duration *d, char *buf, size_t len)
{
	if (d->hosts)
		fmt_duration(d->p90_ms, buf, len);
	else
		snprintf(buf, len, "-");
}

static size_t attention_count(const struct report *r)
{
	size_t n = 0;
	for (size_t i = 0; i < r->n_waves; i++)
		n += r->waves[i].n_attention;
	return n;
}

static const char *const state_help[REPORT_N_STATES] = {
	[HOST_HEALTHY] = "The Exchange services run, under an account that holds every "
			 "required right; nothing wrong is seen.",
	[HOST_REPAIRED] = "Was AFFECTED; a repair succeeded and no problem has been seen since.",
	[HOST_DEGRADED] = "An Exchange service is not running, or authentication errors occur, "
			  "outside the rules below; also a host whose state has not arrived yet.",
	[HOST_AT_RISK] = "Not yet a domain controller, and an Exchange service logs on as a "
			 "local account (promotion will delete it) or its account lacks a "
			 "required right. Fix it before the promotion.",
	[HOST_AFFECTED] = "A domain controller whose Exchange services fail to log on "
			  "(1069, 1314, 1385) or whose POP3/IMAP clients fail to authenticate "
			  "(event 13003) since its promotion. Reset the service account, its "
			  "password and its rights.",
	[HOST_NEEDS_SP_REINSTALL] = "The credentials were repaired and the services run, yet "
				    "POP3/IMAP authentication still fails. Reinstall the "
				    "Exchange service pack.",
	[HOST_REPAIRING] = "A repair command is in flight.",
	[REPORT_NEVER_SEEN] = "In a wave, but no agent has ever connected for it.",
};

#define OFFLINE_HELP                                                                     \
	"Connectivity, not health: the host was seen but has been silent for three "     \
	"heartbeat intervals; its status is the last one known."
#define DONE_HELP "Done: promoted, and HEALTHY or REPAIRED."
#define TABLE_DURATION_HELP                                                               \
	"DETECTED: hosts with a time from promotion to the first AFFECTED or\n"           \
	"NEEDS_SP_REINSTALL, then its median and 90th percentile. REPAIRED: the same\n"   \
	"from that detection to the first REPAIRED. Percentiles by nearest rank; - when\n" \
	"no host has both times.\n"
#define HTML_DURATION_HELP                                                                \
	"Promotion to detection: from the promotion to the first AFFECTED or "            \
	"NEEDS_SP_REINSTALL. Detection to repair: from then to the first REPAIRED. Both "  \
	"over the hosts that have the two times, median and 90th percentile by nearest "   \
	"rank; a dash when no host has them."

/* ---- table ---- */

struct text_table {
	size_t cols, rows;
	const char *align; /* 'l' or 'r' per column */
	char **cells;      /* rows x cols; row 0 holds the headings */
};

static int tt_row(struct text_table *t, const char *const *cells)
{
	char **grown = realloc(t->cells, (t->rows + 1) * t->cols * sizeof(*grown));
	if (!grown)
		return UV_ENOMEM;
	t->cells = grown;
	for (size_t c = 0; c < t->cols; c++) {
		t->cells[t->rows * t->cols + c] = strdup(cells[c]);
		if (!t->cells[t->rows * t->cols + c]) {
			for (size_t k = 0; k < c; k++)
				free(t->cells[t->rows * t->cols + k]);
			return UV_ENOMEM;
		}
	}
	t->rows++;
	return 0;
}

static void tt_print(const struct text_table *t, FILE *out)
{
	size_t width[32] = {0};
	for (size_t r = 0; r < t->rows; r++)
		for (size_t c = 0; c < t->cols; c++) {
			size_t w = text_width(t->cells[r * t->cols + c]);
			if (w > width[c])
				width[c] = w;
		}
	for (size_t r = 0; r < t->rows; r++) {
		for (size_t c = 0; c < t->cols; c++) {
			const char *s = t->cells[r * t->cols + c];
			size_t pad = width[c] - text_width(s);
			if (c)
				fputs("  ", out);
			if (t->align[c] == 'r')
				fprintf(out, "%*s%s", (int)pad, "", s);
			else if (c + 1 < t->cols)
				fprintf(out, "%s%*s", s, (int)pad, "");
			else
				fputs(s, out);
		}
		fputc('\n', out);
	}
}

static void tt_free(struct text_table *t)
{
	for (size_t i = 0; i < t->rows * t->cols; i++)
		free(t->cells[i]);
	free(t->cells);
}

static int table_progress_row(struct text_table *t, const struct report_wave *w)
{
	char planned[32], hosts[CELL_LEN], promoted[CELL_LEN], done[CELL_LEN], pct[16];
	char dn[CELL_LEN], dmed[DUR_LEN], dp90[DUR_LEN], rn[CELL_LEN], rmed[DUR_LEN],
		rp90[DUR_LEN];

	fmt_planned(w, planned, sizeof(planned));
	snprintf(hosts, sizeof(hosts), "%zu", w->hosts);
	snprintf(promoted, sizeof(promoted), "%zu", w->promoted);
	fmt_percent(w, pct, sizeof(pct));
	if (w->hosts)
		snprintf(done, sizeof(done), "%zu (%s)", w->done, pct);
	else
		snprintf(done, sizeof(done), "0");
	snprintf(dn, sizeof(dn), "%zu", w->detect.hosts);
	fmt_median(&w->detect, dmed, sizeof(dmed));
	fmt_p90(&w->detect, dp90, sizeof(dp90));
	snprintf(rn, sizeof(rn), "%zu", w->repair.hosts);
	fmt_median(&w->repair, rmed, sizeof(rmed));
	fmt_p90(&w->repair, rp90, sizeof(rp90));
	const char *row[] = {w->name, planned, hosts, promoted, done, dn, dmed, dp90, rn, rmed, rp90};
	return tt_row(t, row);
}

static int table_states_row(struct text_table *t, const struct report_wave *w)
{
	char cells[REPORT_N_STATES + 1][CELL_LEN];
	const char *row[REPORT_N_STATES + 2] = {w->name};
	for (int s = 0; s < REPORT_N_STATES; s++) {
		snprintf(cells[s], sizeof(cells[s]), "%zu", w->states[s]);
		row[s + 1] = cells[s];
	}
	snprintf(cells[REPORT_N_STATES], sizeof(cells[0]), "%zu", w->offline);
	row[REPORT_N_STATES + 1] = cells[REPORT_N_STATES];
	return tt_row(t, row);
}

static void write_host_line(FILE *out, const struct report_attention *a)
{
	fprintf(out, "  %s", a->host_id);
	if (a->site[0])
		fprintf(out, " (%s)", a->site);
	fprintf(out, ": %s", state_name(a->state));
	if (a->state != REPORT_NEVER_SEEN && a->connectivity == CONN_OFFLINE)
		fputs(", OFFLINE", out);
	fputc('\n', out);
}

static int write_table(const struct report *r, FILE *out)
{
	static const char *const progress_heads[] = {
		"WAVE", "PLANNED", "HOSTS", "PROMOTED", "DONE", "DETECTED",
		"MEDIAN", "P90", "REPAIRED", "MEDIAN", "P90",
	};
	const char *state_heads[REPORT_N_STATES + 2] = {"WAVE"};
	struct text_table progress = {.cols = N_OF(progress_heads), .align = "llrrrrrrrrr"};
	struct text_table states = {.cols = REPORT_N_STATES + 2, .align = "lrrrrrrrrr"};
	char when[TIME_LEN];
	int rc = UV_ENOMEM;

	for (int s = 0; s < REPORT_N_STATES; s++)
		state_heads[s + 1] = state_name(s);
	state_heads[REPORT_N_STATES + 1] = "OFFLINE";
	if (tt_row(&progress, progress_heads) < 0 || tt_row(&states, state_heads) < 0)
		goto out;
	for (size_t i = 0; i < r->n_waves; i++)
		if (table_progress_row(&progress, &r->waves[i]) < 0 ||
		    table_states_row(&states, &r->waves[i]) < 0)
			goto out;
	if (table_progress_row(&progress, &r->total) < 0 || table_states_row(&states, &r->total) < 0)
		goto out;

	util_format_time(r->generated_at_ms, when, sizeof(when));
	fprintf(out, "exfleet wave report, %s%s, generated %s\n\n",
		r->only_wave ? "wave " : "all waves", r->only_wave ? r->only_wave : "", when);
	fputs("Progress\n", out);
	tt_print(&progress, out);
	fputs("\n" DONE_HELP "\n" TABLE_DURATION_HELP "\n", out);
	fputs("Hosts by status\n", out);
	tt_print(&states, out);

	fputs("\nHosts that need attention\n", out);
	if (!attention_count(r))
		fputs("  none\n", out);
	for (size_t i = 0; i < r->n_waves; i++) {
		const struct report_wave *w = &r->waves[i];
		if (!w->n_attention)
			continue;
		fprintf(out, "\n%s%s: %zu of %zu host%s\n", w->no_wave ? "" : "wave ", w->name,
			w->n_attention, w->hosts, w->hosts == 1 ? "" : "s");
		for (size_t k = 0; k < w->n_attention; k++) {
			const struct report_attention *a = &w->attention[k];
			write_host_line(out, a);
			for (size_t e = 0; e < a->n_evidence; e++)
				fprintf(out, "      %s\n", a->evidence[e]);
		}
	}
	rc = 0;
out:
	tt_free(&progress);
	tt_free(&states);
	return rc;
}

/* ---- CSV ---- */

static void csv_text(FILE *out, const char *s)
{
	/* A leading = + - @ would run as a formula in a spreadsheet. */
	int formula = s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@';
	if (!formula && !strpbrk(s, ",\"\r\n")) {
		fputs(s, out);
		return;
	}
	fputc('"', out);
	if (formula)
		fputc('\'', out);
	for (; *s; s++) {
		if (*s == '"')
			fputc('"', out);
		fputc(*s, out);
	}
	fputc('"', out);
}

static void csv_duration(FILE *out, const struct report_duration *d)
{
	fprintf(out, ",%zu", d->hosts);
	if (d->hosts)
		fprintf(out, ",%lld,%lld", (long long)(d->median_ms / 1000),
			(long long)(d->p90_ms / 1000));
	else
		fputs(",,", out);
}

static void csv_row(FILE *out, const struct report_wave *w, const char *name, size_t attention)
{
	csv_text(out, name);
	fprintf(out, ",%s,%s,%zu,%zu,%zu,", w->planned_first, w->planned_last, w->hosts,
		w->promoted, w->done);
	if (w->done_permille >= 0)
		fprintf(out, "%d.%d", w->done_permille / 10, w->done_permille % 10);
	for (int s = 0; s < REPORT_N_STATES; s++)
		fprintf(out, ",%zu", w->states[s]);
	fprintf(out, ",%zu,%zu", w->offline, attention);
	csv_duration(out, &w->detect);
	csv_duration(out, &w->repair);
	fputs("\r\n", out);
}

static int write_csv(const struct report *r, FILE *out)
{
	fputs("wave,planned_first,planned_last,hosts,promoted,done,percent_done,healthy,"
	      "repaired,degraded,at_risk,affected,needs_sp_reinstall,repairing,never_seen,"
	      "offline,attention,detect_hosts,detect_median_s,detect_p90_s,repair_hosts,"
	      "repair_median_s,repair_p90_s\r\n",
	      out);
	for (size_t i = 0; i < r->n_waves; i++)
		csv_row(out, &r->waves[i], r->waves[i].name, r->waves[i].n_attention);
	csv_row(out, &r->total, TOTAL_LABEL, attention_count(r));
	return 0;
}

/* ---- JSON ---- */

static json_t *json_text_or_null(const char *s)
{
	return s && s[0] ? json_string(s) : json_null();
}

static json_t *json_duration(const struct report_duration *d)
{
	return json_pack("{s:I, s:o, s:o}", "hosts", (json_int_t)d->hosts, "median_s",
			 d->hosts ? json_integer(d->median_ms / 1000) : json_null(), "p90_s",
			 d->hosts ? json_integer(d->p90_ms / 1000) : json_null());
}

/* The fleet's total is no wave: "wave" is null there, and it has no list. */
static json_t *json_wave(const struct report_wave *w, int total)
{
	json_t *states = json_object(), *o = NULL, *list = NULL;

	if (!states)
		return NULL;
	for (int s = 0; s < REPORT_N_STATES; s++)
		if (json_object_set_new(states, state_name(s), json_integer((json_int_t)w->states[s])))
			goto fail;
	o = json_pack("{s:o, s:s, s:o, s:o, s:I, s:I, s:I, s:o, s:o, s:I, s:o, s:o}",
		      "wave", w->no_wave || total ? json_null() : json_string(w->name),
		      "label", w->name,
		      "planned_first", json_text_or_null(w->planned_first),
		      "planned_last", json_text_or_null(w->planned_last),
		      "hosts", (json_int_t)w->hosts,
		      "promoted", (json_int_t)w->promoted,
		      "done", (json_int_t)w->done,
		      "percent_done", w->done_permille >= 0 ? json_real(w->done_permille / 10.0)
							    : json_null(),
		      "status", states,
		      "offline", (json_int_t)w->offline,
		      "promotion_to_detection", json_duration(&w->detect),
		      "detection_to_repair", json_duration(&w->repair));
	states = NULL;
	if (!o || total)
		return o;
	list = json_array();
	if (!list || json_object_set_new(o, "attention", list))
		goto fail;
	for (size_t i = 0; i < w->n_attention; i++) {
		const struct report_attention *a = &w->attention[i];
		json_t *ev = json_array();
		for (size_t e = 0; e < a->n_evidence; e++) {
			if (json_array_append_new(ev, json_string(a->evidence[e]))) {
				json_decref(ev);
				goto fail;
			}
		}
		json_t *h = json_pack("{s:s, s:o, s:s, s:s, s:o}", "host_id", a->host_id, "site",
				      json_text_or_null(a->site), "status", state_name(a->state),
				      "connectivity",
				      connectivity_name((enum connectivity)a->connectivity),
				      "evidence", ev);
		if (json_array_append_new(list, h))
			goto fail;
	}
	return o;
fail:
	json_decref(states);
	json_decref(o);
	return NULL;
}

static int write_json(const struct report *r, FILE *out)
{
	char when[TIME_LEN];
	json_t *waves = json_array(), *root = NULL;
	int rc = UV_ENOMEM;

	if (!waves)
		goto out;
	for (size_t i = 0; i < r->n_waves; i++)
		if (json_array_append_new(waves, json_wave(&r->waves[i], 0)))
			goto out;
	util_format_time(r->generated_at_ms, when, sizeof(when));
	root = json_pack("{s:s, s:I, s:o, s:s, s:O, s:o}", "generated_at", when,
			 "generated_at_ms", (json_int_t)r->generated_at_ms, "wave_filter",
			 json_text_or_null(r->only_wave), "percentile", "nearest-rank", "waves",
			 waves, "total", json_wave(&r->total, 1));
	if (!root)
		goto out;
	/* Four digits show percent_done's tenths exactly (100.0). */
	if (json_dumpf(root, out, JSON_INDENT(2) | JSON_REAL_PRECISION(4)) < 0) {
		rc = UV_EIO;
		goto out;
	}
	fputc('\n', out);
	rc = 0;
out:
	json_decref(waves);
	json_decref(root);
	return rc;
}

/* ---- HTML ---- */

struct state_style {
	const char *cls;
	const char *fill;
	const char *ink; /* text on the fill */
};

static const struct state_style styles[REPORT_N_STATES] = {
	[HOST_HEALTHY] = {"healthy", "#2e7d32", "#ffffff"},
	[HOST_REPAIRED] = {"repaired", "#00796b", "#ffffff"},
	[HOST_DEGRADED] = {"degraded", "#f9a825", "#1a1a1a"},
	[HOST_AT_RISK] = {"at-risk", "#d84315", "#ffffff"},
	[HOST_AFFECTED] = {"affected", "#b71c1c", "#ffffff"},
	[HOST_NEEDS_SP_REINSTALL] = {"needs-sp", "#6a1b9a", "#ffffff"},
	[HOST_REPAIRING] = {"repairing", "#1565c0", "#ffffff"},
	[REPORT_NEVER_SEEN] = {"never-seen", "#757575", "#ffffff"},
};

/* Writes at most len bytes of s, escaped for HTML text and attributes. */
static void html_textn(FILE *out, const char *s, size_t len)
{
	for (; *s && len; s++, len--) {
		switch (*s) {
		case '&':
			fputs("&amp;", out);
			break;
		case '<':
			fputs("&lt;", out);
			break;
		case '>':
			fputs("&gt;", out);
			break;
		case '"':
			fputs("&quot;", out);
			break;
		case '\'':
			fputs("&#39;", out);
			break;
		default:
			fputc(*s, out);
		}
	}
}

static void html_text(FILE *out, const char *s)
{
	html_textn(out, s, SIZE_MAX);
}

/* About 20 characters fit left of the bars; the tables give whole names. */
#define LABEL_MAX 20

static void svg_label(FILE *out, const char *name)
{
	size_t chars = 0, cut = 0;
	for (size_t i = 0; name[i]; i++) {
		if (((unsigned char)name[i] & 0xC0) == 0x80)
			continue;
		if (chars == LABEL_MAX - 1)
			cut = i;
		chars++;
	}
	if (chars <= LABEL_MAX) {
		html_text(out, name);
		return;
	}
	html_textn(out, name, cut);
	fputs("\xE2\x80\xA6", out); /* an ellipsis */
}

static const char html_head[] =
	"<!DOCTYPE html>\n"
	"<html lang=\"en\">\n"
	"<head>\n"
	"<meta charset=\"utf-8\">\n"
	"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";

static const char html_style[] =
	"<style>\n"
	"body { font: 14px/1.45 \"Segoe UI\", Helvetica, Arial, sans-serif; color: #1a1a1a;\n"
	"       background: #fff; margin: 24px auto; max-width: 1100px; padding: 0 16px; }\n"
	"h1 { font-size: 22px; margin: 0 0 4px; }\n"
	"h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 3px; border-bottom: 1px solid #ccc; }\n"
	"h3 { font-size: 15px; margin: 18px 0 6px; }\n"
	".meta { color: #555; margin: 0 0 12px; }\n"
	".summary { font-size: 15px; margin: 0 0 8px; }\n"
	"table { border-collapse: collapse; margin: 6px 0; }\n"
	"th, td { border: 1px solid #d0d0d0; padding: 4px 8px; text-align: left; vertical-align: top; }\n"
	"th { background: #f2f2f2; font-weight: 600; }\n"
	"td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }\n"
	"td.n, .nw { white-space: nowrap; }\n"
	"tr.total td { font-weight: 600; background: #f7f7f7; }\n"
	"td.z { color: #aaa; }\n"
	".badge { display: inline-block; padding: 1px 6px; border-radius: 3px; font-size: 12px;\n"
	"         font-weight: 600; white-space: nowrap; }\n"
	".badge.offline { color: #1a1a1a; background: #fff; border: 1px solid #757575; }\n"
	"ul.ev { margin: 0; padding-left: 18px; }\n"
	".note { color: #555; font-size: 13px; margin: 4px 0; }\n"
	"dl.states { margin: 0; }\n"
	"dl.states dt { margin-top: 6px; }\n"
	"dl.states dd { margin: 2px 0 0 24px; }\n"
	"svg { display: block; max-width: 100%; height: auto; }\n"
	"svg text { font-family: \"Segoe UI\", Helvetica, Arial, sans-serif; }\n"
	"footer { margin-top: 32px; color: #777; font-size: 12px; }\n"
	"@media print {\n"
	"  body { margin: 0; max-width: none; font-size: 9pt; }\n"
	"  th, td { padding: 3px 4px; }\n"
	"  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }\n"
	"  h2, h3 { break-after: avoid; }\n"
	"  tr, svg, dl.states div { break-inside: avoid; }\n"
	"}\n";

static void html_styles(FILE *out)
{
	fputs(html_style, out);
	for (int s = 0; s < REPORT_N_STATES; s++)
		fprintf(out, ".s-%s { background: %s; color: %s; }\n.b-%s { border-top: 4px solid %s; }\n",
			styles[s].cls, styles[s].fill, styles[s].ink, styles[s].cls, styles[s].fill);
	fputs("</style>\n", out);
}

/* One bar per wave, split by status in proportion, then the fleet's. */
#define BAR_X 170
#define BAR_W 560
#define ROW_H 30
#define BAR_H 20

static void svg_bar(FILE *out, const struct report_wave *w, int y, int bold)
{
	int cum = 0;

	fprintf(out, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" font-size=\"13\"%s>", BAR_X - 10,
		y + 15, bold ? " font-weight=\"bold\"" : "");
	svg_label(out, bold ? "Fleet" : w->name);
	fputs("</text>\n", out);
	if (!w->hosts)
		fprintf(out, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#eeeeee\"/>\n",
			BAR_X, y, BAR_W, BAR_H);
	for (int s = 0; s < REPORT_N_STATES && w->hosts; s++) {
		if (!w->states[s])
			continue;
		/* Edges from running totals, so the parts always fill the bar. */
		int x0 = BAR_X + (int)((size_t)cum * BAR_W / w->hosts);
		cum += (int)w->states[s];
		int x1 = BAR_X + (int)((size_t)cum * BAR_W / w->hosts);
		fprintf(out,
			"<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\">"
			"<title>%s: %zu</title></rect>\n",
			x0, y, x1 - x0, BAR_H, styles[s].fill, state_name(s), w->states[s]);
		if (x1 - x0 >= 20)
			fprintf(out,
				"<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"12\" "
				"fill=\"%s\">%zu</text>\n",
				(x0 + x1) / 2, y + 14, styles[s].ink, w->states[s]);
	}
	char pct[16];
	fmt_percent(w, pct, sizeof(pct));
	fprintf(out,
		"<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"#333333\">%zu host%s, %s done</text>\n",
		BAR_X + BAR_W + 10, y + 15, w->hosts, w->hosts == 1 ? "" : "s", pct);
}

static void html_chart(FILE *out, const struct report *r)
{
	int rows = (int)r->n_waves + 1;
	int legend_y = rows * ROW_H + 18;
	int height = legend_y + 2 * 22 + 4;

	fprintf(out,
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"%d\" "
		"viewBox=\"0 0 900 %d\" role=\"img\" aria-label=\"Hosts by status, per wave\">\n",
		height, height);
	for (size_t i = 0; i < r->n_waves; i++)
		svg_bar(out, &r->waves[i], (int)i * ROW_H, 0);
	/* A gap and a rule set the fleet apart from its waves. */
	int y = (int)r->n_waves * ROW_H + 6;
	fprintf(out,
		"<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#999999\" "
		"stroke-width=\"1\"/>\n",
		BAR_X, y - 4, BAR_X + BAR_W, y - 4);
	svg_bar(out, &r->total, y, 1);
	for (int s = 0; s < REPORT_N_STATES; s++) {
		int lx = BAR_X + (s % 4) * 180, ly = legend_y + (s / 4) * 22;
		fprintf(out,
			"<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/>"
			"<text x=\"%d\" y=\"%d\" font-size=\"12\">%s</text>\n",
			lx, ly, styles[s].fill, lx + 17, ly + 10, state_name(s));
	}
	fputs("</svg>\n", out);
}

static void html_num(FILE *out, size_t n)
{
	fprintf(out, "<td class=\"n%s\">%zu</td>", n ? "" : " z", n);
}

/* Dates hold hyphens, where a browser would break them in a narrow column;
 * a range may break after its "..". */
static void html_planned(FILE *out, const struct report_wave *w)
{
	if (!w->planned_first[0])
		fputs("<td>-</td>", out);
	else if (strcmp(w->planned_first, w->planned_last) == 0)
		fprintf(out, "<td class=\"nw\">%s</td>", w->planned_first);
	else
		fprintf(out, "<td><span class=\"nw\">%s</span>..<wbr><span class=\"nw\">%s</span></td>",
			w->planned_first, w->planned_last);
}

/* A status heading under a bar of its colour (a swatch beside it would
 * widen a table that must fit a printed page); it may wrap after its
 * underscores. */
static void html_state_heading(FILE *out, int state)
{
	const char *name = state_name(state);
	fprintf(out, "<th class=\"n b-%s\">", styles[state].cls);
	for (; *name; name++) {
		fputc(*name, out);
		if (*name == '_')
			fputs("<wbr>", out);
	}
	fputs("</th>", out);
}

static void html_progress_row(FILE *out, const struct report_wave *w, int total)
{
	char pct[16], a[DUR_LEN], b[DUR_LEN], c[DUR_LEN], d[DUR_LEN];

	fmt_percent(w, pct, sizeof(pct));
	fmt_median(&w->detect, a, sizeof(a));
	fmt_p90(&w->detect, b, sizeof(b));
	fmt_median(&w->repair, c, sizeof(c));
	fmt_p90(&w->repair, d, sizeof(d));
	fputs(total ? "<tr class=\"total\"><td>" : "<tr><td>", out);
	html_text(out, total ? "Fleet" : w->name);
	fputs("</td>", out);
	html_planned(out, w);
	html_num(out, w->hosts);
	html_num(out, w->promoted);
	html_num(out, w->done);
	fprintf(out, "<td class=\"n\">%s</td>", pct);
	html_num(out, w->detect.hosts);
	fprintf(out, "<td class=\"n\">%s</td><td class=\"n\">%s</td>", a, b);
	html_num(out, w->repair.hosts);
	fprintf(out, "<td class=\"n\">%s</td><td class=\"n\">%s</td></tr>\n", c, d);
}

static void html_states_row(FILE *out, const struct report_wave *w, int total)
{
	fputs(total ? "<tr class=\"total\"><td>" : "<tr><td>", out);
	html_text(out, total ? "Fleet" : w->name);
	fputs("</td>", out);
	for (int s = 0; s < REPORT_N_STATES; s++)
		html_num(out, w->states[s]);
	html_num(out, w->offline);
	fputs("</tr>\n", out);
}

static void html_badge(FILE *out, int state)
{
	fprintf(out, "<span class=\"badge s-%s\">%s</span>", styles[state].cls, state_name(state));
}

static void html_attention(FILE *out, const struct report *r)
{
	fputs("<h2>Hosts that need attention</h2>\n", out);
	if (!attention_count(r))
		fputs("<p>None.</p>\n", out);
	for (size_t i = 0; i < r->n_waves; i++) {
		const struct report_wave *w = &r->waves[i];
		if (!w->n_attention)
			continue;
		fputs("<h3>", out);
		html_text(out, w->no_wave ? "No wave" : "Wave ");
		if (!w->no_wave)
			html_text(out, w->name);
		fprintf(out, ": %zu of %zu host%s</h3>\n", w->n_attention, w->hosts,
			w->hosts == 1 ? "" : "s");
		fputs("<table>\n<tr><th>Host</th><th>Site</th><th>Status</th><th>Evidence</th></tr>\n",
		      out);
		for (size_t k = 0; k < w->n_attention; k++) {
			const struct report_attention *a = &w->attention[k];
			fputs("<tr><td>", out);
			html_text(out, a->host_id);
			fputs("</td><td>", out);
			html_text(out, a->site);
			fputs("</td><td>", out);
			html_badge(out, a->state);
			if (a->state != REPORT_NEVER_SEEN && a->connectivity == CONN_OFFLINE)
				fputs(" <span class=\"badge offline\">OFFLINE</span>", out);
			fputs("</td><td>", out);
			if (a->n_evidence) {
				fputs("<ul class=\"ev\">", out);
				for (size_t e = 0; e < a->n_evidence; e++) {
					fputs("<li>", out);
					html_text(out, a->evidence[e]);
					fputs("</li>", out);
				}
				fputs("</ul>", out);
			}
			fputs("</td></tr>\n", out);
		}
		fputs("</table>\n", out);
	}
}

static void html_help(FILE *out)
{
	fputs("<h2>What the statuses mean</h2>\n<dl class=\"states\">\n", out);
	for (int s = 0; s < REPORT_N_STATES; s++) {
		fputs("<div><dt>", out);
		html_badge(out, s);
		fprintf(out, "</dt><dd>%s</dd></div>\n", state_help[s]);
	}
	fputs("<div><dt><span class=\"badge offline\">OFFLINE</span></dt><dd>" OFFLINE_HELP
	      "</dd></div>\n</dl>\n",
	      out);
}

static int write_html(const struct report *r, FILE *out)
{
	char when[TIME_LEN], pct[16];
	size_t attention = attention_count(r);

	util_format_time(r->generated_at_ms, when, sizeof(when));
	fmt_percent(&r->total, pct, sizeof(pct));
	fputs(html_head, out);
	fputs("<title>exfleet wave report", out);
	if (r->only_wave) {
		fputs(": wave ", out);
		html_text(out, r->only_wave);
	}
	fprintf(out, " (%s)</title>\n", when);
	html_styles(out);
	fputs("</head>\n<body>\n", out);
	fputs("<h1>Exchange 5.5 domain migration: wave report</h1>\n", out);
	fprintf(out, "<p class=\"meta\">Generated %s by exfleet; ", when);
	if (r->only_wave) {
		fputs("wave ", out);
		html_text(out, r->only_wave);
		fputs(" only.", out);
	} else {
		fputs("all waves.", out);
	}
	fputs(" It follows the failure of Microsoft KB Q255269: once a server running Exchange "
	      "Server 5.5 is promoted to a domain controller, its Exchange services fail to log "
	      "on and POP3/IMAP clients are refused.</p>\n",
	      out);
	fprintf(out,
		"<p class=\"summary\"><strong>%zu of %zu host%s done (%s)</strong>; %zu promoted; "
		"%zu need%s attention.</p>\n",
		r->total.done, r->total.hosts, r->total.hosts == 1 ? "" : "s", pct,
		r->total.promoted, attention, attention == 1 ? "s" : "");

	fputs("<h2>Hosts by status</h2>\n", out);
	html_chart(out, r);

	fputs("<h2>Progress</h2>\n<table>\n"
	      "<tr><th rowspan=\"2\">Wave</th><th rowspan=\"2\">Planned</th>"
	      "<th rowspan=\"2\" class=\"n\">Hosts</th><th rowspan=\"2\" class=\"n\">Promoted</th>"
	      "<th colspan=\"2\">Done</th><th colspan=\"3\">Promotion to detection</th>"
	      "<th colspan=\"3\">Detection to repair</th></tr>\n"
	      "<tr><th class=\"n\">Hosts</th><th class=\"n\">%</th>"
	      "<th class=\"n\">Hosts</th><th class=\"n\">Median</th><th class=\"n\">P90</th>"
	      "<th class=\"n\">Hosts</th><th class=\"n\">Median</th><th class=\"n\">P90</th></tr>\n",
	      out);
	for (size_t i = 0; i < r->n_waves; i++)
		html_progress_row(out, &r->waves[i], 0);
	html_progress_row(out, &r->total, 1);
	fputs("</table>\n<p class=\"note\">" DONE_HELP " " HTML_DURATION_HELP "</p>\n", out);

	fputs("<h2>Status counts</h2>\n<table>\n<tr><th>Wave</th>", out);
	for (int s = 0; s < REPORT_N_STATES; s++)
		html_state_heading(out, s);
	fputs("<th class=\"n\">OFFLINE</th></tr>\n", out);
	for (size_t i = 0; i < r->n_waves; i++)
		html_states_row(out, &r->waves[i], 0);
	html_states_row(out, &r->total, 1);
	fputs("</table>\n", out);

	html_attention(out, r);
	html_help(out);
	fputs("<footer>exfleet wave report. Times are UTC.</footer>\n</body>\n</html>\n", out);
	return 0;
}

int report_write(const struct report *r, enum report_format f, FILE *out)
{
	int rc;

	switch (f) {
	case REPORT_TABLE:
		rc = write_table(r, out);
		break;
	case REPORT_CSV:
		rc = write_csv(r, out);
		break;
	case REPORT_JSON:
		rc = write_json(r, out);
		break;
	case REPORT_HTML:
		rc = write_html(r, out);
		break;
	default:
		return UV_EINVAL;
	}
	if (rc == 0 && (fflush(out) != 0 || ferror(out)))
		rc = UV_EIO;
	return rc;
}
