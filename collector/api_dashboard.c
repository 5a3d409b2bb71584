/* The dashboard's side of the API: its files (compiled in, dashboard.h),
 * one-time sign-in links, and the sessions browsers keep in a cookie.
 *
 * An operator's tool mints a link with its certificate (POST
 * /api/v1/signin-links); opening it (GET /signin?token=...) spends the
 * token and sets the session cookie: HttpOnly (no script reads it), Secure
 * (HTTPS only), SameSite=Strict (no other site's page sends it). A session
 * may only read: commands stay signed on the operator's machine. */
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "api_internal.h"
#include "dashboard.h"
#include "pki.h"
#include "signin.h"
#include "util.h"

int api_get_asset(struct api_request *r)
{
	static const char *const none[] = {NULL};
	if (api_params_only(r, none) < 0)
		return 0;
	const struct dashboard_asset *asset = dashboard_asset_find(r->path, strlen(r->path));
	if (!asset)
		return api_error(r, 404, "not_found", "no such file: %.200s", r->path);
	if (strncmp(asset->content_type, "text/html", 9) == 0)
		return api_send_html(r, 200, (const char *)asset->data, asset->len);
	return api_send_text(r, 200, asset->content_type, (const char *)asset->data, asset->len);
}

/* A small page of its own for the sign-in outcomes: title, then a
 * sentence; refresh_to, when set, is where the browser goes next. Every
 * string is the collector's own or a checked name (pki_name_valid), so
 * nothing here needs escaping. */
static int page(struct api_request *r, int status, const char *title, const char *text,
		const char *refresh_to)
{
	char html[2048];
	int n = snprintf(html, sizeof(html),
			 "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
			 "%s%s%s<title>exfleet: %s</title>"
			 "<link rel=\"stylesheet\" href=\"/dashboard/style.css\"></head>\n"
			 "<body class=\"notice\"><main><h1>%s</h1><p>%s</p>%s%s%s</main>"
			 "</body></html>\n",
			 refresh_to ? "<meta http-equiv=\"refresh\" content=\"0; url=" : "",
			 refresh_to ? refresh_to : "", refresh_to ? "\">" : "", title, title, text,
			 refresh_to ? "<p><a href=\"" : "", refresh_to ? refresh_to : "",
			 refresh_to ? "\">Open the dashboard</a></p>" : "");
	if (n < 0 || (size_t)n >= sizeof(html))
		return api_error(r, 500, "internal", "sign-in page too long");
	return api_send_html(r, status, html, (size_t)n);
}

int api_get_signin(struct api_request *r)
{
	static const char *const allowed[] = {"token", NULL};
	if (api_params_only(r, allowed) < 0)
		return 0;
	const char *token = api_param(r, "token");
	if (!token || !*token)
		return page(r, 400, "No sign-in token",
			    "This address needs the token from a sign-in link. Run "
			    "<code>exfleetctl dashboard</code> on your workstation and open the "
			    "link it prints.",
			    NULL);
	char session[SIGNIN_SECRET_LEN + 1];
	struct signin_identity who;
	int rc = signin_redeem(api_signin(r->api), token, util_now_ms(), session, &who);
	if (rc == UV_EALREADY || rc == UV_ETIMEDOUT || rc == UV_ENOENT) {
		log_warn("api: sign-in refused: %s",
			 rc == UV_EALREADY	 ? "the link was already used"
			 : rc == UV_ETIMEDOUT ? "the link has expired"
					      : "no such link (or the collector restarted)");
		return page(r, 410, "This sign-in link no longer works",
			    rc == UV_EALREADY ? "It has already been used: each link signs in "
						"once. Run <code>exfleetctl dashboard</code> for a "
						"new one."
			    : rc == UV_ETIMEDOUT
				    ? "It has expired. Run <code>exfleetctl dashboard</code> for a "
				      "new one, and open it within a few minutes."
				    : "It is unknown here: it may have been mistyped, or the "
				      "collector has restarted since. Run <code>exfleetctl "
				      "dashboard</code> for a new one.",
			    NULL);
	}
	if (rc < 0)
		return page(r, 503, "Sign-in failed",
			    "The collector could not make a session; its log says why.", NULL);
	int64_t max_age = (int64_t)api_cfg(r->api)->session_ttl_ms / 1000;
	char cookie[160];
	snprintf(cookie, sizeof(cookie),
		 "%s=%s; Path=/; Max-Age=%lld; HttpOnly; Secure; SameSite=Strict",
		 API_SESSION_COOKIE, session, (long long)max_age);
	api_add_header(r, "set-cookie", cookie);
	memset(session, 0, sizeof(session));
	memset(cookie, 0, sizeof(cookie));
	log_info("api: %s (%s) signed in to the dashboard", who.name,
		 pki_role_name((enum pki_role)who.role));
	char until[32], text[256];
	util_format_time(who.expires_ms, until, sizeof(until));
	snprintf(text, sizeof(text), "Signed in as %s (%s) until %s.", who.name,
		 pki_role_name((enum pki_role)who.role), until);
	return page(r, 200, "Signed in", text, "/");
}

int api_post_signin_links(struct api_request *r)
{
	static const char *const none[] = {NULL};
	if (api_params_only(r, none) < 0)
		return 0;
	if (r->body_len > 0)
		return api_error(r, 400, "invalid_body", "body: this takes none");
	struct signin_identity who = {.role = r->who->role};
	snprintf(who.name, sizeof(who.name), "%s", r->who->name);
	char token[SIGNIN_SECRET_LEN + 1];
	int64_t now = util_now_ms();
	if (signin_mint(api_signin(r->api), &who, now, token) < 0)
		return api_error(r, 503, "unavailable", "no random bytes for a token");
	char path[sizeof(token) + 32], expires[32];
	snprintf(path, sizeof(path), "/signin?token=%s", token);
	util_format_time(who.expires_ms, expires, sizeof(expires));
	log_info("api: %s minted a dashboard sign-in link, valid until %s", who.name, expires);
	json_t *body = json_pack("{s:s, s:s, s:I, s:s, s:s}", "path", path, "expires_at", expires,
				 "expires_in", (json_int_t)((who.expires_ms - now) / 1000), "name",
				 who.name, "role", pki_role_name((enum pki_role)who.role));
	memset(token, 0, sizeof(token));
	memset(path, 0, sizeof(path));
	return api_send_json(r, 201, body);
}

int api_post_signout(struct api_request *r)
{
	static const char *const none[] = {NULL};
	if (api_params_only(r, none) < 0)
		return 0;
	const char *key = api_cookie(r, API_SESSION_COOKIE);
	if (key)
		signin_end(api_signin(r->api), key);
	api_add_header(r, "set-cookie",
		       API_SESSION_COOKIE "=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict");
	return api_send_json(r, 200, json_pack("{s:b}", "signed_out", 1));
}
