/* exfleetctl and the collector's API: the connection settings (flags, then
 * ctl.ini, then defaults), requests with their failures turned into exit
 * codes and messages that say what to do, paged lists, request paths. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "config.h"
#include "ctl.h"
#include "ctl_http.h"
#include "util.h"

#define DEFAULT_URL "https://127.0.0.1:8443"
#define CONFIG_MAX (64u << 10)
#define PAGE 500

struct ctl_ini {
	char *url, *ca, *cert, *key;
	uint64_t timeout_ms;
	char *path; /* the file looked for: --config, or the default */
};

#define K(name, type, field, flags, def, min, max, help)                                     \
	{"collector", name, type, offsetof(struct ctl_ini, field), flags, def, min, max, NULL, help}

static const struct config_key ini_keys[] = {
	K("url", CONFIG_STRING, url, 0, NULL, 0, 0, "the collector's API, https://host:port"),
	K("ca", CONFIG_PATH, ca, CONFIG_MUST_EXIST, NULL, 0, 0, "the deployment CA (PEM)"),
	K("cert", CONFIG_PATH, cert, CONFIG_MUST_EXIST, NULL, 0, 0,
	  "your viewer or operator certificate (PEM)"),
	K("key", CONFIG_PATH, key, CONFIG_PRIVATE_KEY, NULL, 0, 0, "its key (PEM, mode 0600)"),
	K("timeout", CONFIG_DURATION, timeout_ms, 0, "30s", 100, 3600000,
	  "how long one request may take"),
};
#define INI_KEYS (sizeof(ini_keys) / sizeof(ini_keys[0]))

int ctl_api_report(struct ctl_api *api, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(api->message, sizeof(api->message), fmt, ap);
	va_end(ap);
	if (!api->quiet)
		fprintf(stderr, "exfleetctl %s: %s\n", api->what, api->message);
	return rc;
}

int ctl_api_option(struct ctl_api *api, int c, char **argv)
{
	const char *help = api->help ? api->help : api->what;
	switch (c) {
	case CTL_OPT_URL:
		api->url = optarg;
		return CTL_OK;
	case CTL_OPT_CA:
		api->ca = optarg;
		return CTL_OK;
	case CTL_OPT_CERT:
		api->cert = optarg;
		return CTL_OK;
	case CTL_OPT_KEY:
		api->key = optarg;
		return CTL_OK;
	case CTL_OPT_CONFIG:
		api->config = optarg;
		return CTL_OK;
	case CTL_OPT_TIMEOUT:
		if (ctl_parse_duration(optarg, &api->timeout_ms) < 0)
			return ctl_usage_error(api->what, help,
					       "--timeout '%s' is not a duration like 30s or 2m",
					       optarg);
		return CTL_OK;
	case CTL_OPT_JSON:
		api->json = 1;
		return CTL_OK;
	case CTL_OPT_CSV:
		api->csv = 1;
		return CTL_OK;
	case ':':
		return ctl_usage_error(api->what, help, "%s needs a value", argv[optind - 1]);
	default:
		return ctl_usage_error(api->what, help, "unknown option '%s'", argv[optind - 1]);
	}
}

/* ---- ctl.ini ---- */

/* The file's text with a value "~/..." made "$HOME/...": line for line,
 * so that errors keep their line numbers. */
static char *expand_home(const char *text)
{
	const char *home = getenv("HOME");
	size_t lines = 1;
	for (const char *p = text; *p; p++)
		lines += *p == '\n';
	size_t hlen = home ? strlen(home) : 0;
	char *out = malloc(strlen(text) + lines * hlen + 1);
	if (!out)
		return NULL;
	char *o = out;
	for (const char *p = text; *p;) {
		size_t n = strcspn(p, "\n");
		size_t sep = strcspn(p, "=:\n");
		const char *v = p + sep + (sep < n);
		while (v < p + n && (*v == ' ' || *v == '\t'))
			v++;
		if (home && sep < n && v + 1 < p + n && v[0] == '~' && v[1] == '/') {
			memcpy(o, p, (size_t)(v - p));
			o += v - p;
			memcpy(o, home, hlen);
			o += hlen;
			memcpy(o, v + 1, (size_t)(p + n - v - 1));
			o += p + n - v - 1;
		} else {
			memcpy(o, p, n);
			o += n;
		}
		p += n;
		if (*p == '\n')
			*o++ = *p++;
	}
	*o = '\0';
	return out;
}

/* The default file: $XDG_CONFIG_HOME/exfleet/ctl.ini or ~/.config/exfleet/ctl.ini. */
static char *default_config(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	char path[4096];
	if (xdg && xdg[0] == '/')
		snprintf(path, sizeof(path), "%s/exfleet/ctl.ini", xdg);
	else if (home && home[0])
		snprintf(path, sizeof(path), "%s/.config/exfleet/ctl.ini", home);
	else
		return NULL;
	return strdup(path);
}

static int load_ini(struct ctl_api *api)
{
	struct ctl_ini *ini = calloc(1, sizeof(*ini));
	char err[512], *text = NULL, *expanded = NULL, *dir = NULL;
	size_t len;
	int rc = CTL_USAGE;
	api->ini = ini;
	if (!ini)
		return ctl_api_report(api, CTL_FAILED, "out of memory");
	ini->timeout_ms = 30000;
	ini->path = api->config ? strdup(api->config) : default_config();
	if (!ini->path)
		return CTL_OK;
	int read = util_read_file(ini->path, CONFIG_MAX, &text, &len, err, sizeof(err));
	if (read == UV_ENOENT && !api->config)
		return CTL_OK; /* the default need not exist */
	if (read < 0)
		return ctl_api_report(api, CTL_USAGE, "%s%s", api->config ? "--config: " : "", err);
	expanded = expand_home(text);
	dir = strdup(ini->path);
	if (!expanded || !dir) {
		rc = ctl_api_report(api, CTL_FAILED, "out of memory");
		goto out;
	}
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	struct config_error cerr;
	if (config_load_string(expanded, ini->path, slash ? dir : NULL, ini_keys, INI_KEYS, ini,
			       &cerr) < 0) {
		rc = ctl_api_report(api, CTL_USAGE, "%s", cerr.msg);
		goto out;
	}
	rc = CTL_OK;
out:
	free(text);
	free(expanded);
	free(dir);
	return rc;
}

/* A setting from its flag, else the file; "give --flag, or set key". */
static const char *setting(struct ctl_api *api, const char *flag, const char *from_ini,
			   const char *name, const char *what)
{
	if (flag || from_ini)
		return flag ? flag : from_ini;
	ctl_api_report(api, CTL_USAGE, "no %s: give --%s FILE, or set %s in [collector] of %s", what, name,
	       name, api->ini->path ? api->ini->path : "a config file (--config FILE)");
	return NULL;
}

static int readable(struct ctl_api *api, const char *flag, const char *path)
{
	if (access(path, R_OK) == 0)
		return CTL_OK;
	return ctl_api_report(api, CTL_USAGE, "--%s %s: cannot read it: %s", flag, path, strerror(errno));
}

int ctl_api_limit(struct ctl_api *api, const char *text, long *limit)
{
	char *end;
	*limit = strtol(text, &end, 10);
	if (end == text || *end || *limit < 0)
		return ctl_usage_error(api->what, api->help ? api->help : api->what,
				       "--limit '%s' is not a number (0 for all)", text);
	return CTL_OK;
}

int ctl_api_connect(struct ctl_api *api)
{
	if (api->json && api->csv)
		return ctl_usage_error(api->what, api->help ? api->help : api->what,
				       "choose one of --json and --csv");
	int rc = load_ini(api);
	if (rc != CTL_OK)
		return rc;
	struct ctl_ini *ini = api->ini;
	api->url_used = api->url ? api->url : ini->url ? ini->url : DEFAULT_URL;
	api->ca_used =
	    setting(api, api->ca, ini->ca, "ca", "CA certificate to check the collector");
	if (!api->ca_used)
		return CTL_USAGE;
	api->cert_used = setting(api, api->cert, ini->cert, "cert", "client certificate");
	if (!api->cert_used)
		return CTL_USAGE;
	api->key_used = setting(api, api->key, ini->key, "key", "key for the client certificate");
	if (!api->key_used)
		return CTL_USAGE;
	char err[512];
	if ((api->ca && readable(api, "ca", api->ca) != CTL_OK) ||
	    (api->cert && readable(api, "cert", api->cert) != CTL_OK))
		return CTL_USAGE;
	if (api->key && util_check_private_file(api->key, err, sizeof(err)) < 0)
		return ctl_api_report(api, CTL_USAGE, "--key: %s", err);
	struct ctl_url url;
	if (ctl_url_parse(api->url_used, &url, err, sizeof(err)) < 0)
		return ctl_api_report(api, CTL_USAGE, "%s%s", api->url ? "--url: " : "", err);
	struct ctl_http_settings s = {
		.url = api->url_used,
		.ca_file = api->ca_used,
		.cert_file = api->cert_used,
		.key_file = api->key_used,
		.timeout_ms = api->timeout_ms ? api->timeout_ms : (int64_t)ini->timeout_ms,
	};
	if (ctl_http_open(&api->http, &s, err, sizeof(err)) < 0)
		return ctl_api_report(api, CTL_USAGE, "%s", err);
	return CTL_OK;
}

void ctl_api_close(struct ctl_api *api)
{
	ctl_http_close(api->http);
	api->http = NULL;
	if (api->ini) {
		config_free(ini_keys, INI_KEYS, api->ini);
		free(api->ini->path);
		free(api->ini);
		api->ini = NULL;
	}
}

/* ---- requests ---- */

int ctl_api_call(struct ctl_api *api, const char *method, const char *path,
		 const char *content_type, const void *body, size_t len,
		 struct ctl_http_response *r)
{
	char err[768];
	int rc = ctl_http_request(api->http, method, path, content_type, body, len, r, err,
				  sizeof(err));
	switch (rc) {
	case 0:
		return CTL_OK;
	case CTL_HTTP_UNREACHABLE:
		return ctl_api_report(api, CTL_UNREACHABLE,
			      "cannot reach the collector at %s: %s; is exfleet-collector running, "
			      "and is its [api] listen address reachable from here?",
			      api->url_used, err);
	case CTL_HTTP_TLS:
		return ctl_api_report(api, CTL_UNREACHABLE, "TLS with the collector at %s failed: %s",
			      api->url_used, err);
	case CTL_HTTP_PROTOCOL:
		return ctl_api_report(api, CTL_UNREACHABLE,
			      "%s did not answer like the collector's API: %s; is --url right?",
			      api->url_used, err);
	default:
		return ctl_api_report(api, CTL_FAILED, "%s", err);
	}
}

int ctl_api_error(struct ctl_api *api, const char *method, const struct ctl_http_response *r)
{
	json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, NULL);
	json_t *e = json_object_get(j, "error");
	const char *message = json_string_value(json_object_get(e, "message"));
	const char *code = json_string_value(json_object_get(e, "code"));
	char fallback[200];
	if (!message) {
		size_t n = r->body ? strcspn(r->body, "\r\n") : 0;
		snprintf(fallback, sizeof(fallback), "HTTP status %d%s%.*s", r->status,
			 n ? ": " : "", (int)(n > 120 ? 120 : n), r->body ? r->body : "");
		message = fallback;
	}
	int rc;
	if (r->status == 401)
		rc = ctl_api_report(api, CTL_UNREACHABLE,
			    "%s\n  the collector did not accept %s: give a viewer or operator "
			    "certificate from the deployment's CA with --cert and --key",
			    message, api->cert_used);
	else if (r->status == 403 && !(code && strcmp(code, "command_refused") == 0))
		rc = ctl_api_report(api, CTL_UNREACHABLE,
			    "%s\n  (you connected with %s) exfleetctl pki issue operator NAME "
			    "--role %s makes %s certificate; give it with --cert and --key",
			    message, api->cert_used,
			    strcmp(method, "GET") == 0 ? "viewer" : "operator",
			    strcmp(method, "GET") == 0 ? "a viewer's" : "an operator's");
	else
		rc = ctl_api_report(api, CTL_FAILED, "%s", message);
	json_decref(j);
	return rc;
}

static int request_json(struct ctl_api *api, const char *method, const char *path,
			json_t *body, json_t **out)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	struct ctl_http_response r;
	*out = NULL;
	if (body && !text)
		return ctl_api_report(api, CTL_FAILED, "out of memory");
	int rc = ctl_api_call(api, method, path, text ? "application/json" : NULL, text,
			      text ? strlen(text) : 0, &r);
	free(text);
	if (rc != CTL_OK)
		return rc;
	if (r.status < 200 || r.status >= 300) {
		rc = ctl_api_error(api, method, &r);
	} else {
		json_error_t jerr;
		*out = json_loadb(r.body, r.len, 0, &jerr);
		if (!*out)
			rc = ctl_api_report(api, CTL_FAILED, "the answer to %s %s is not JSON: %s", method,
				    path, jerr.text);
	}
	ctl_http_response_free(&r);
	return rc;
}

int ctl_api_get(struct ctl_api *api, const char *path, json_t **out)
{
	return request_json(api, "GET", path, NULL, out);
}

int ctl_api_post_json(struct ctl_api *api, const char *path, json_t *body, json_t **out)
{
	return request_json(api, "POST", path, body, out);
}

/* A page of a list: limit=page (0: the server's default) from offset.
 * A server whose [api] page_max is below the limit refuses it: quietly,
 * so that the caller can ask again with the server's default. */
static int get_page(struct ctl_api *api, const char *path, size_t page, json_int_t offset,
		    json_t **out)
{
	char text[sizeof(((struct ctl_path *)0)->text) + 64];
	char sep = strchr(path, '?') ? '&' : '?';
	if (page)
		snprintf(text, sizeof(text), "%s%climit=%zu&offset=%lld", path, sep, page,
			 (long long)offset);
	else
		snprintf(text, sizeof(text), "%s%coffset=%lld", path, sep, (long long)offset);
	int quiet = api->quiet;
	api->quiet = 1;
	int rc = ctl_api_get(api, text, out);
	api->quiet = quiet;
	if (rc != CTL_OK && page && strncmp(api->message, "limit:", 6) == 0)
		return CTL_HTTP_MORE; /* ask again with the default */
	if (rc != CTL_OK && !quiet)
		fprintf(stderr, "exfleetctl %s: %s\n", api->what, api->message);
	return rc;
}

void ctl_api_print_list(const struct ctl_api *api, json_t *items, void (*csv)(json_t *items),
			void (*table)(json_t *items), const char *empty)
{
	if (api->json)
		ctl_print_json(items);
	else if (api->csv)
		csv(items);
	else if (json_array_size(items) == 0)
		puts(empty);
	else
		table(items);
}

int ctl_api_get_items(struct ctl_api *api, const char *path, size_t max, json_t **items)
{
	json_int_t offset = 0;
	size_t page = PAGE;
	*items = json_array();
	if (!*items)
		return ctl_api_report(api, CTL_FAILED, "out of memory");
	for (;;) {
		size_t want = page;
		if (page && max && max - json_array_size(*items) < want)
			want = max - json_array_size(*items);
		json_t *answer = NULL;
		int rc = get_page(api, path, want, offset, &answer);
		if (rc == CTL_HTTP_MORE) {
			page = 0;
			continue;
		}
		json_t *list = json_object_get(answer, "items");
		json_t *next = json_object_get(answer, "next");
		if (rc == CTL_OK && !json_is_array(list))
			rc = ctl_api_report(api, CTL_FAILED, "the answer to GET %s has no items", path);
		if (rc != CTL_OK) {
			json_decref(answer);
			json_decref(*items);
			*items = NULL;
			return rc;
		}
		json_array_extend(*items, list);
		while (max && json_array_size(*items) > max)
			json_array_remove(*items, json_array_size(*items) - 1);
		int more = json_is_integer(next) && json_array_size(list) > 0 &&
			   (!max || json_array_size(*items) < max);
		offset = json_integer_value(next);
		json_decref(answer);
		if (!more)
			return CTL_OK;
	}
}

/* ---- paths ---- */

static void path_add(struct ctl_path *p, const char *text, int encode)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *s = (const unsigned char *)text; *s && !p->too_long; s++) {
		int plain = !encode || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
			    (*s >= '0' && *s <= '9') || strchr("-._~", *s);
		if (p->len + 4 >= sizeof(p->text)) {
			p->too_long = 1;
			break;
		}
		if (plain) {
			p->text[p->len++] = (char)*s;
		} else {
			p->text[p->len++] = '%';
			p->text[p->len++] = hex[*s >> 4];
			p->text[p->len++] = hex[*s & 15];
		}
	}
	p->text[p->len] = '\0';
}

void ctl_path_init(struct ctl_path *p, const char *path, const char *segment)
{
	p->len = 0;
	p->too_long = 0;
	p->text[0] = '\0';
	path_add(p, path, 0);
	if (segment) {
		path_add(p, "/", 0);
		path_add(p, segment, 1);
	}
	if (p->too_long)
		p->text[0] = '\0';
}

void ctl_path_param(struct ctl_path *p, const char *name, const char *value)
{
	if (!value)
		return;
	path_add(p, strchr(p->text, '?') ? "&" : "?", 0);
	path_add(p, name, 1);
	path_add(p, "=", 0);
	path_add(p, value, 1);
	if (p->too_long)
		p->text[0] = '\0'; /* refused by the client, never cut short */
}
