/* Sign-in tokens and dashboard sessions: once only, expiry, a full table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "pki.h"
#include "signin.h"

static struct signin_identity alice(void)
{
	struct signin_identity who = {.role = PKI_ROLE_OPERATOR};
	strcpy(who.name, "alice");
	return who;
}

static void test_once(void **state)
{
	struct signin *s = signin_new(8, 1000, 5000);
	assert_non_null(s);
	struct signin_identity who = alice(), got;
	char token[SIGNIN_SECRET_LEN + 1], session[SIGNIN_SECRET_LEN + 1];
	assert_int_equal(signin_mint(s, &who, 100, token), 0);
	assert_int_equal(who.expires_ms, 1100);
	assert_int_equal(strlen(token), SIGNIN_SECRET_LEN);
	assert_int_equal(strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				       "0123456789-_"),
			 SIGNIN_SECRET_LEN);
	/* A token is not a session. */
	assert_int_equal(signin_session(s, token, 200, &got), UV_ENOENT);
	assert_int_equal(signin_redeem(s, token, 200, session, &got), 0);
	assert_string_equal(got.name, "alice");
	assert_int_equal(got.role, PKI_ROLE_OPERATOR);
	assert_int_equal(got.expires_ms, 5200);
	assert_string_not_equal(session, token);
	assert_int_equal(signin_redeem(s, token, 300, session + 0, &got), UV_EALREADY);
	/* A session is not a token either. */
	char other[SIGNIN_SECRET_LEN + 1];
	assert_int_equal(signin_redeem(s, session, 300, other, &got), UV_ENOENT);
	memset(&got, 0, sizeof(got));
	assert_int_equal(signin_session(s, session, 5199, &got), 0);
	assert_string_equal(got.name, "alice");
	assert_int_equal(signin_session(s, session, 5200, &got), UV_ENOENT);
	/* Wrong lengths and strangers are nobody. */
	assert_int_equal(signin_session(s, "", 300, &got), UV_ENOENT);
	assert_int_equal(signin_redeem(s, "short", 300, other, &got), UV_ENOENT);
	signin_free(s);
}

static void test_expiry_and_signout(void **state)
{
	struct signin *s = signin_new(8, 1000, 5000);
	struct signin_identity who = alice(), got;
	char token[SIGNIN_SECRET_LEN + 1], session[SIGNIN_SECRET_LEN + 1];
	assert_int_equal(signin_mint(s, &who, 0, token), 0);
	assert_int_equal(signin_redeem(s, token, 1000, session, &got), UV_ETIMEDOUT);
	assert_int_equal(signin_mint(s, &who, 0, token), 0);
	assert_int_equal(signin_redeem(s, token, 999, session, &got), 0);
	signin_end(s, session);
	assert_int_equal(signin_session(s, session, 1000, &got), UV_ENOENT);
	signin_end(s, session); /* twice is harmless */
	signin_free(s);
}

/* A full table drops what expires first, never the newest entry. */
static void test_full_table(void **state)
{
	struct signin *s = signin_new(2, 1000, 5000);
	struct signin_identity who = alice(), got;
	char t1[SIGNIN_SECRET_LEN + 1], t2[SIGNIN_SECRET_LEN + 1], t3[SIGNIN_SECRET_LEN + 1];
	assert_int_equal(signin_mint(s, &who, 0, t1), 0);
	assert_int_equal(signin_mint(s, &who, 10, t2), 0);
	assert_int_equal(signin_mint(s, &who, 20, t3), 0);
	char session[SIGNIN_SECRET_LEN + 1];
	assert_int_equal(signin_redeem(s, t1, 30, session, &got), UV_ENOENT);
	/* Redeeming t3 needs a slot for its session: t2, which would expire
	 * before t3's used entry, makes room. */
	assert_int_equal(signin_redeem(s, t3, 30, session, &got), 0);
	assert_int_equal(signin_session(s, session, 40, &got), 0);
	assert_int_equal(signin_redeem(s, t2, 40, session, &got), UV_ENOENT);
	signin_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_once),
		cmocka_unit_test(test_expiry_and_signout),
		cmocka_unit_test(test_full_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
