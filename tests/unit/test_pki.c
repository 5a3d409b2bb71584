/* The deployment CA: certificates that chain, carry the right identity and
 * usage, expire, get revoked, and the refusals that protect the directory. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "pki.h"
#include "testutil.h"

struct fixture {
	char root[2048]; /* removed afterwards */
	char dir[4096];  /* the PKI directory, not yet created */
	char err[512];
};

static int fixture_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	if (test_tmpdir("test_pki", f->root, sizeof(f->root)) < 0) {
		free(f);
		return -1;
	}
	snprintf(f->dir, sizeof(f->dir), "%s/pki", f->root);
	*state = f;
	return 0;
}

static int fixture_teardown(void **state)
{
	struct fixture *f = *state;
	test_rmtree(f->root);
	free(f);
	return 0;
}

static X509 *load_cert(const char *path)
{
	X509 *cert = test_read_cert(path);
	assert_non_null(cert);
	return cert;
}

static EVP_PKEY *load_key(const char *path)
{
	EVP_PKEY *key = test_read_key(path);
	assert_non_null(key);
	return key;
}

static X509_CRL *load_crl(const char *dir)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/crl.pem", dir);
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	X509_CRL *crl = PEM_read_X509_CRL(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(crl);
	return crl;
}

static X509 *load_ca(const char *dir)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/ca.crt", dir);
	return load_cert(path);
}

static unsigned file_mode(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (unsigned)st.st_mode & 07777;
}

static int file_present(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* X509_verify_cert's result code for cert against dir's CA, with the CRL
 * checked when crl is set. */
static int verify(const char *dir, X509 *cert, int purpose, int with_crl)
{
	X509 *ca = load_ca(dir);
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	assert_non_null(store);
	assert_non_null(ctx);
	assert_int_equal(X509_STORE_add_cert(store, ca), 1);
	if (with_crl) {
		X509_CRL *crl = load_crl(dir);
		assert_int_equal(X509_STORE_add_crl(store, crl), 1);
		X509_CRL_free(crl);
		X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
	}
	assert_int_equal(X509_STORE_CTX_init(ctx, store, cert, NULL), 1);
	if (purpose)
		assert_int_equal(X509_STORE_CTX_set_purpose(ctx, purpose), 1);
	int ok = X509_verify_cert(ctx);
	int result = X509_STORE_CTX_get_error(ctx);
	assert_true(ok == 1 ? result == X509_V_OK : result != X509_V_OK);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	X509_free(ca);
	ERR_clear_error();
	return result;
}

static void subject_text(X509 *cert, int nid, char *buf, size_t len)
{
	buf[0] = '\0';
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(cert), nid, buf, (int)len) > 0);
}

static void issue_ok(struct fixture *f, enum pki_role role, const char *name,
                     struct pki_entry *issued)
{
	struct pki_issue_opts o = {.role = role, .name = name};
	int rc = pki_issue(f->dir, &o, issued, f->err, sizeof(f->err));
	if (rc < 0)
		print_error("pki_issue %s: %s\n", name, f->err);
	assert_int_equal(rc, 0);
}

static void init_ok(struct fixture *f, enum pki_algo algo)
{
	int rc = pki_init(f->dir, algo, 0, f->err, sizeof(f->err));
	if (rc < 0)
		print_error("pki_init: %s\n", f->err);
	assert_int_equal(rc, 0);
}

/* Every role, checked the way a peer would: chain, purpose, names, key. */
static void check_roles(struct fixture *f, enum pki_algo algo)
{
	static const struct {
		enum pki_role role;
		const char *name;
		int purpose;
		uint32_t xku;
	} cases[] = {
	    {PKI_ROLE_AGENT, "EXCH01.corp.example", X509_PURPOSE_SSL_CLIENT, XKU_SSL_CLIENT},
	    {PKI_ROLE_COLLECTOR, "collector.corp.example", X509_PURPOSE_SSL_SERVER, XKU_SSL_SERVER},
	    {PKI_ROLE_OPERATOR, "alice", X509_PURPOSE_SSL_CLIENT, XKU_SSL_CLIENT},
	    {PKI_ROLE_VIEWER, "bob_v", X509_PURPOSE_SSL_CLIENT, XKU_SSL_CLIENT},
	};
	char crt[4200], key[4200], text[128], role_dir[4200];

	init_ok(f, algo);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pki_entry issued;
		issue_ok(f, cases[i].role, cases[i].name, &issued);
		assert_int_equal(strlen(issued.serial), PKI_SERIAL_HEX_LEN);
		assert_int_equal(pki_cert_path(f->dir, cases[i].role, cases[i].name, crt,
		                               sizeof(crt), key, sizeof(key)),
		                 0);
		X509 *cert = load_cert(crt);

		assert_int_equal(verify(f->dir, cert, cases[i].purpose, 1), X509_V_OK);
		/* The other side's purpose is refused: an agent is no server. */
		int other = cases[i].purpose == X509_PURPOSE_SSL_SERVER ? X509_PURPOSE_SSL_CLIENT
		                                                        : X509_PURPOSE_SSL_SERVER;
		assert_int_equal(verify(f->dir, cert, other, 0), X509_V_ERR_INVALID_PURPOSE);
		assert_int_equal(X509_get_extended_key_usage(cert), cases[i].xku);
		assert_int_equal(X509_check_ca(cert), 0);

		subject_text(cert, NID_organizationName, text, sizeof(text));
		assert_string_equal(text, "exfleet");
		subject_text(cert, NID_organizationalUnitName, text, sizeof(text));
		assert_string_equal(text, pki_role_name(cases[i].role));
		subject_text(cert, NID_commonName, text, sizeof(text));
		assert_string_equal(text, cases[i].name);

		BIGNUM *serial_bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
		char *serial_hex = BN_bn2hex(serial_bn);
		BN_free(serial_bn);
		assert_non_null(serial_hex);
		for (char *p = serial_hex; *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'F' ? *p - 'A' + 'a' : *p);
		assert_string_equal(serial_hex, issued.serial);
		OPENSSL_free(serial_hex);

		/* Only the collector serves a name; the others carry none beyond
		 * their CN. */
		if (cases[i].role == PKI_ROLE_COLLECTOR)
			assert_int_equal(X509_check_host(cert, cases[i].name, 0, 0, NULL), 1);
		assert_int_equal(X509_get_ext_by_NID(cert, NID_subject_alt_name, -1) >= 0,
		                 cases[i].role == PKI_ROLE_COLLECTOR);
		assert_int_equal(X509_check_host(cert, "other.example", 0, 0, NULL), 0);

		char name[PKI_NAME_MAX + 1];
		enum pki_role role;
		assert_int_equal(pki_cert_identity(cert, name, sizeof(name), &role), 0);
		assert_string_equal(name, cases[i].name);
		assert_int_equal(role, cases[i].role);
		assert_int_equal(pki_cert_identity(cert, name, 3, &role), UV_ENOBUFS);

		assert_int_equal(file_mode(key), 0600);
		snprintf(role_dir, sizeof(role_dir), "%s/%s", f->dir, pki_role_name(cases[i].role));
		assert_int_equal(file_mode(role_dir), 0700);
		EVP_PKEY *pkey = load_key(key);
		assert_int_equal(X509_check_private_key(cert, pkey), 1);
		/* Agents are Ed25519 whatever the CA is; the others follow it. */
		enum pki_algo want = cases[i].role == PKI_ROLE_AGENT ? PKI_ALGO_ED25519 : algo;
		assert_int_equal(pki_leaf_algo(cases[i].role, algo), want);
		assert_true(EVP_PKEY_is_a(pkey, want == PKI_ALGO_ED25519 ? "ED25519" : "EC"));
		EVP_PKEY_free(pkey);
		X509_free(cert);
	}

	X509 *ca = load_ca(f->dir);
	assert_int_equal(X509_check_ca(ca), 1);
	assert_true(X509_get_key_usage(ca) & KU_KEY_CERT_SIGN);
	assert_true(X509_get_key_usage(ca) & KU_CRL_SIGN);
	char cn[128];
	subject_text(ca, NID_commonName, cn, sizeof(cn));
	assert_int_equal(strncmp(cn, "exfleet CA ", 11), 0);
	assert_true(
	    EVP_PKEY_is_a(X509_get0_pubkey(ca), algo == PKI_ALGO_ED25519 ? "ED25519" : "EC"));
	X509_free(ca);
	snprintf(key, sizeof(key), "%s/ca.key", f->dir);
	assert_int_equal(file_mode(key), 0600);
	assert_int_equal(file_mode(f->dir), 0700);
}

static void test_roles_ecdsa(void **state)
{
	check_roles(*state, PKI_ALGO_ECDSA_P256);
}

static void test_roles_ed25519(void **state)
{
	check_roles(*state, PKI_ALGO_ED25519);
}

/* Two deployments never share a CA name, so a certificate of one cannot be
 * mistaken for the other's. */
static void test_ca_names_differ(void **state)
{
	struct fixture *f = *state;
	char first[128], second[128];
	init_ok(f, PKI_ALGO_ECDSA_P256);
	X509 *ca = load_ca(f->dir);
	subject_text(ca, NID_commonName, first, sizeof(first));
	X509_free(ca);
	strcat(f->dir, "2");
	init_ok(f, PKI_ALGO_ECDSA_P256);
	ca = load_ca(f->dir);
	subject_text(ca, NID_commonName, second, sizeof(second));
	X509_free(ca);
	assert_string_not_equal(first, second);
}

static void test_collector_ip(void **state)
{
	struct fixture *f = *state;
	char crt[4200], key[4200], name[PKI_NAME_MAX + 1];
	enum pki_role role;
	init_ok(f, PKI_ALGO_ECDSA_P256);

	issue_ok(f, PKI_ROLE_COLLECTOR, "192.0.2.10", NULL);
	assert_int_equal(pki_cert_path(f->dir, PKI_ROLE_COLLECTOR, "192.0.2.10", crt, sizeof(crt),
	                               key, sizeof(key)),
	                 0);
	X509 *cert = load_cert(crt);
	assert_int_equal(X509_check_ip_asc(cert, "192.0.2.10", 0), 1);
	/* An IP entry, not a DNS one (the subject CN would match a host check). */
	assert_int_equal(
	    X509_check_host(cert, "192.0.2.10", 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, NULL), 0);
	assert_int_equal(verify(f->dir, cert, X509_PURPOSE_SSL_SERVER, 1), X509_V_OK);
	X509_free(cert);

	issue_ok(f, PKI_ROLE_COLLECTOR, "2001:db8::7", NULL);
	assert_int_equal(pki_cert_path(f->dir, PKI_ROLE_COLLECTOR, "2001:db8::7", crt, sizeof(crt),
	                               key, sizeof(key)),
	                 0);
	cert = load_cert(crt);
	assert_int_equal(X509_check_ip_asc(cert, "2001:db8::7", 0), 1);
	assert_int_equal(pki_cert_identity(cert, name, sizeof(name), &role), 0);
	assert_string_equal(name, "2001:db8::7");
	assert_int_equal(role, PKI_ROLE_COLLECTOR);
	X509_free(cert);

	/* Only collectors may be named by an IPv6 address. */
	struct pki_issue_opts o = {.role = PKI_ROLE_AGENT, .name = "2001:db8::8"};
	assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)), UV_EINVAL);
}

static void test_expired(void **state)
{
	struct fixture *f = *state;
	char crt[4200];
	init_ok(f, PKI_ALGO_ECDSA_P256);
	struct pki_issue_opts o = {
	    .role = PKI_ROLE_AGENT, .name = "old-host", .days = 1, .backdate_s = 3 * 86400};
	assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)), 0);
	assert_int_equal(pki_cert_path(f->dir, o.role, o.name, crt, sizeof(crt), NULL, 0), 0);
	X509 *cert = load_cert(crt);
	assert_int_equal(verify(f->dir, cert, X509_PURPOSE_SSL_CLIENT, 0),
	                 X509_V_ERR_CERT_HAS_EXPIRED);
	X509_free(cert);

	/* An expired certificate no longer blocks a new one. */
	o.days = 0;
	o.backdate_s = 0;
	assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)), 0);
	cert = load_cert(crt);
	assert_int_equal(verify(f->dir, cert, X509_PURPOSE_SSL_CLIENT, 1), X509_V_OK);
	X509_free(cert);
}

static int crl_has(const char *dir, const char *serial_hex)
{
	X509_CRL *crl = load_crl(dir);
	X509 *ca = load_ca(dir);
	BIGNUM *bn = NULL;
	assert_int_equal(BN_hex2bn(&bn, serial_hex), PKI_SERIAL_HEX_LEN);
	ASN1_INTEGER *serial = BN_to_ASN1_INTEGER(bn, NULL);
	X509_REVOKED *revoked = NULL;
	/* The CRL is the CA's own: its signature verifies with the CA key. */
	assert_int_equal(X509_CRL_verify(crl, X509_get0_pubkey(ca)), 1);
	assert_true(X509_cmp_time(X509_CRL_get0_nextUpdate(crl), NULL) > 0);
	int found = X509_CRL_get0_by_serial(crl, &revoked, serial) == 1;
	ASN1_INTEGER_free(serial);
	BN_free(bn);
	X509_free(ca);
	X509_CRL_free(crl);
	return found;
}

struct seen {
	int count;
	char serial[PKI_SERIAL_HEX_LEN + 1];
};

static void seen_cb(const struct pki_entry *e, void *arg)
{
	struct seen *s = arg;
	assert_true(e->revoked);
	s->count++;
	memcpy(s->serial, e->serial, sizeof(s->serial));
}

static void check_revoke(struct fixture *f, enum pki_algo algo)
{
	struct pki_entry a1, a2, c1;
	char crt[4200];
	struct seen seen = {0};
	init_ok(f, algo);
	issue_ok(f, PKI_ROLE_AGENT, "host1", &a1);
	struct pki_issue_opts o = {.role = PKI_ROLE_AGENT, .name = "host1", .force = 1};
	assert_int_equal(pki_issue(f->dir, &o, &a2, f->err, sizeof(f->err)), 0);
	issue_ok(f, PKI_ROLE_COLLECTOR, "collector1", &c1);
	assert_false(crl_has(f->dir, a1.serial));

	/* By name: both certificates of host1, nothing else. */
	assert_int_equal(pki_revoke(f->dir, "host1", seen_cb, &seen, f->err, sizeof(f->err)), 0);
	assert_int_equal(seen.count, 2);
	assert_true(crl_has(f->dir, a1.serial));
	assert_true(crl_has(f->dir, a2.serial));
	assert_false(crl_has(f->dir, c1.serial));
	assert_int_equal(pki_cert_path(f->dir, PKI_ROLE_AGENT, "host1", crt, sizeof(crt), NULL, 0),
	                 0);
	X509 *cert = load_cert(crt);
	assert_int_equal(verify(f->dir, cert, X509_PURPOSE_SSL_CLIENT, 1), X509_V_ERR_CERT_REVOKED);
	X509_free(cert);

	/* By serial, in upper case as other tools print it. */
	char upper[PKI_SERIAL_HEX_LEN + 1];
	for (size_t i = 0; i <= PKI_SERIAL_HEX_LEN; i++)
		upper[i] = (char)(c1.serial[i] >= 'a' && c1.serial[i] <= 'f' ? c1.serial[i] - 32
		                                                             : c1.serial[i]);
	seen.count = 0;
	assert_int_equal(pki_revoke(f->dir, upper, seen_cb, &seen, f->err, sizeof(f->err)), 0);
	assert_int_equal(seen.count, 1);
	assert_string_equal(seen.serial, c1.serial);
	assert_true(crl_has(f->dir, c1.serial));

	/* Twice is an error that says so, and the CRL still holds all three. */
	assert_int_equal(pki_revoke(f->dir, c1.serial, NULL, NULL, f->err, sizeof(f->err)),
	                 UV_EALREADY);
	assert_non_null(strstr(f->err, "already revoked"));
	assert_int_equal(pki_revoke(f->dir, "host1", NULL, NULL, f->err, sizeof(f->err)),
	                 UV_EALREADY);
	assert_true(crl_has(f->dir, a1.serial));

	/* A refreshed CRL keeps every revocation and verifies. */
	assert_int_equal(pki_crl_refresh(f->dir, 30, f->err, sizeof(f->err)), 0);
	assert_true(crl_has(f->dir, a1.serial));
	assert_true(crl_has(f->dir, c1.serial));
	X509_CRL *crl = load_crl(f->dir);
	ASN1_INTEGER *number = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
	assert_non_null(number);
	assert_int_equal(ASN1_INTEGER_get(number), 4); /* init, two revokes, refresh */
	ASN1_INTEGER_free(number);
	X509_CRL_free(crl);

	/* A revoked name can be issued again without --force. */
	issue_ok(f, PKI_ROLE_AGENT, "host1", NULL);
	cert = load_cert(crt);
	assert_int_equal(verify(f->dir, cert, X509_PURPOSE_SSL_CLIENT, 1), X509_V_OK);
	X509_free(cert);
}

static void test_revoke_ecdsa(void **state)
{
	check_revoke(*state, PKI_ALGO_ECDSA_P256);
}

static void test_revoke_ed25519(void **state)
{
	check_revoke(*state, PKI_ALGO_ED25519);
}

struct listed {
	int count;
	int revoked;
};

static void listed_cb(const struct pki_entry *e, void *arg)
{
	struct listed *l = arg;
	l->count++;
	l->revoked += e->revoked;
}

static void test_list(void **state)
{
	struct fixture *f = *state;
	struct listed l = {0};
	struct pki_entry issued;
	init_ok(f, PKI_ALGO_ECDSA_P256);
	assert_int_equal(pki_list(f->dir, listed_cb, &l, f->err, sizeof(f->err)), 0);
	assert_int_equal(l.count, 0);
	issue_ok(f, PKI_ROLE_AGENT, "h1", &issued);
	issue_ok(f, PKI_ROLE_OPERATOR, "h1", NULL);
	assert_int_equal(pki_revoke(f->dir, issued.serial, NULL, NULL, f->err, sizeof(f->err)), 0);
	assert_int_equal(pki_list(f->dir, listed_cb, &l, f->err, sizeof(f->err)), 0);
	assert_int_equal(l.count, 2);
	assert_int_equal(l.revoked, 1);
	/* Expiry recorded is about 825 days out. */
	int64_t days = (issued.not_after - (int64_t)time(NULL)) / 86400;
	assert_true(days >= PKI_LEAF_DAYS_DEFAULT - 1 && days <= PKI_LEAF_DAYS_DEFAULT);
}

static void test_refusals(void **state)
{
	struct fixture *f = *state;
	static const char *const bad[] = {
	    "../x", "",
	    "a/b",  ".hidden",
	    "-x",   "a b",
	    "a\\b", "..",
	    "x\n",  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 65 */
	};
	char path[4200];

	/* Not a CA yet. */
	struct pki_issue_opts o = {.role = PKI_ROLE_AGENT, .name = "host1"};
	assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)), UV_ENOENT);
	assert_non_null(strstr(f->err, "pki init"));

	init_ok(f, PKI_ALGO_ECDSA_P256);
	assert_int_equal(pki_init(f->dir, PKI_ALGO_ED25519, 0, f->err, sizeof(f->err)), UV_EEXIST);
	assert_non_null(strstr(f->err, "already holds a CA"));
	assert_non_null(strstr(f->err, f->dir));

	issue_ok(f, PKI_ROLE_AGENT, "host1", NULL);
	assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)), UV_EEXIST);
	assert_non_null(strstr(f->err, "--force"));
	/* The same name in another role is another identity. */
	issue_ok(f, PKI_ROLE_COLLECTOR, "host1", NULL);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_false(pki_name_valid(bad[i]));
		for (int r = PKI_ROLE_AGENT; r <= PKI_ROLE_VIEWER; r++) {
			o.role = (enum pki_role)r;
			o.name = bad[i];
			assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)),
			                 UV_EINVAL);
			assert_int_equal(
			    pki_cert_path(f->dir, o.role, bad[i], path, sizeof(path), NULL, 0),
			    UV_EINVAL);
		}
	}
	/* Nothing escaped the role directories. */
	snprintf(path, sizeof(path), "%s/x.crt", f->dir);
	assert_false(file_present(path));
	snprintf(path, sizeof(path), "%s/x.crt", f->root);
	assert_false(file_present(path));

	assert_true(pki_name_valid("a"));
	assert_true(pki_name_valid("EXCH-01.corp_1.example"));
	assert_true(pki_name_valid(
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 64 */

	assert_int_equal(pki_revoke(f->dir, "nobody", NULL, NULL, f->err, sizeof(f->err)),
	                 UV_ENOENT);
	assert_non_null(strstr(f->err, "nobody"));
	assert_int_equal(pki_revoke(f->dir, "0123456789abcdef0123456789abcdef", NULL, NULL, f->err,
	                            sizeof(f->err)),
	                 UV_ENOENT);
	assert_int_equal(pki_revoke(f->dir, "", NULL, NULL, f->err, sizeof(f->err)), UV_EINVAL);

	o.role = PKI_ROLE_AGENT;
	o.name = "host2";
	o.days = -1;
	assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)), UV_EINVAL);
	o.days = PKI_DAYS_MAX + 1;
	assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)), UV_EINVAL);
	assert_int_equal(pki_crl_refresh(f->dir, -5, f->err, sizeof(f->err)), UV_EINVAL);

	/* Another command holding the lock: refuse, name the lock file. */
	o.days = 0;
	snprintf(path, sizeof(path), "%s/index.txt.lock", f->dir);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fclose(fp);
	assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)), UV_EBUSY);
	assert_non_null(strstr(f->err, "index.txt.lock"));
	unlink(path);
	assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)), 0);
	assert_false(file_present(path));

	/* A CA key others can read is refused. */
	snprintf(path, sizeof(path), "%s/ca.key", f->dir);
	assert_int_equal(chmod(path, 0644), 0);
	o.name = "host3";
	assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)), UV_EPERM);
	assert_non_null(strstr(f->err, "chmod 600"));
}

static void test_roles_parse(void **state)
{
	(void)state;
	for (int r = PKI_ROLE_AGENT; r <= PKI_ROLE_VIEWER; r++)
		assert_int_equal(pki_role_parse(pki_role_name((enum pki_role)r)), r);
	assert_string_equal(pki_role_name(PKI_ROLE_VIEWER), "viewer");
	assert_int_equal(pki_role_parse("admin"), -1);
	assert_null(pki_role_name((enum pki_role)7));
}

/* A certificate not made by pki_issue yields no identity. */
static void test_identity_refuses(void **state)
{
	(void)state;
	char name[PKI_NAME_MAX + 1];
	enum pki_role role;
	X509 *cert = X509_new();
	X509_NAME *subject = X509_get_subject_name(cert);
	assert_int_equal(pki_cert_identity(cert, name, sizeof(name), &role), UV_EINVAL);
	X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (const unsigned char *)"h1", -1, -1,
	                           0);
	assert_int_equal(pki_cert_identity(cert, name, sizeof(name), &role), UV_EINVAL);
	X509_NAME_add_entry_by_txt(subject, "OU", MBSTRING_ASC, (const unsigned char *)"admin", -1,
	                           -1, 0);
	assert_int_equal(pki_cert_identity(cert, name, sizeof(name), &role), UV_EINVAL);
	X509_free(cert);

	cert = X509_new();
	subject = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(subject, "OU", MBSTRING_ASC, (const unsigned char *)"agent", -1,
	                           -1, 0);
	X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (const unsigned char *)"../h1", -1,
	                           -1, 0);
	assert_int_equal(pki_cert_identity(cert, name, sizeof(name), &role), UV_EINVAL);
	X509_free(cert);

	cert = X509_new();
	subject = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(subject, "OU", MBSTRING_ASC, (const unsigned char *)"agent", -1,
	                           -1, 0);
	X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (const unsigned char *)"h1", -1, -1,
	                           0);
	assert_int_equal(pki_cert_identity(cert, name, sizeof(name), &role), 0);
	/* Two CNs: which one is the peer? Neither. */
	X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (const unsigned char *)"h2", -1, -1,
	                           0);
	assert_int_equal(pki_cert_identity(cert, name, sizeof(name), &role), UV_EINVAL);
	X509_free(cert);
}

static const char *read_index(struct fixture *f)
{
	static char text[65536];
	char path[4200];
	snprintf(path, sizeof(path), "%s/index.txt", f->dir);
	FILE *fp = fopen(path, "r");
	size_t n = fp ? fread(text, 1, sizeof(text) - 1, fp) : 0;
	text[n] = '\0';
	if (fp)
		fclose(fp);
	return text;
}

/* Certificates minted in memory (the load generator's) are what pki_issue
 * would make: they verify, carry the identity, and refuse bad names. */
static void test_mint(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(pki_init(f->dir, PKI_ALGO_ECDSA_P256, 0, f->err, sizeof(f->err)), 0);
	struct pki_ca *ca;
	assert_int_equal(pki_ca_load(f->dir, &ca, f->err, sizeof(f->err)), 0);
	EVP_PKEY *key;
	assert_int_equal(pki_ca_keygen(ca, PKI_ROLE_AGENT, &key, f->err, sizeof(f->err)), 0);
	assert_true(EVP_PKEY_is_a(key, "ED25519"));
	X509 *cert;
	assert_int_equal(pki_ca_mint(ca, PKI_ROLE_AGENT, "LOAD00001", key, 1, &cert, f->err,
				     sizeof(f->err)),
			 0);
	assert_int_equal(verify(f->dir, cert, X509_PURPOSE_SSL_CLIENT, 1), X509_V_OK);
	char name[PKI_NAME_MAX + 1];
	enum pki_role role;
	assert_int_equal(pki_cert_identity(cert, name, sizeof(name), &role), 0);
	assert_string_equal(name, "LOAD00001");
	assert_int_equal(role, PKI_ROLE_AGENT);
	assert_int_equal(X509_check_private_key(cert, key), 1);
	X509_free(cert);
	assert_true(pki_ca_mint(ca, PKI_ROLE_AGENT, "../x", key, 1, &cert, f->err,
				sizeof(f->err)) < 0);
	EVP_PKEY_free(key);
	pki_ca_free(ca);
	/* Not in the index: listing shows nothing was issued. */
	assert_null(strstr(read_index(f), "LOAD00001"));
}

static EVP_PKEY *issued_key(struct fixture *f, enum pki_role role, const char *name)
{
	char crt[4200], key[4200];
	assert_int_equal(pki_cert_path(f->dir, role, name, crt, sizeof(crt), key, sizeof(key)), 0);
	return load_key(key);
}

/* --algo overrides the role's default either way; an unknown algorithm is
 * refused and issues nothing. */
static void test_key_algo_chosen(void **state)
{
	struct fixture *f = *state;
	init_ok(f, PKI_ALGO_ED25519);
	struct pki_issue_opts o = {.role = PKI_ROLE_AGENT, .name = "EXCH01", .algo_set = 1,
	                           .algo = PKI_ALGO_ECDSA_P256};
	assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)), 0);
	EVP_PKEY *key = issued_key(f, PKI_ROLE_AGENT, "EXCH01");
	assert_true(EVP_PKEY_is_a(key, "EC"));
	EVP_PKEY_free(key);

	o = (struct pki_issue_opts){.role = PKI_ROLE_COLLECTOR, .name = "c.example",
	                            .algo_set = 1, .algo = PKI_ALGO_ECDSA_P256};
	assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)), 0);
	key = issued_key(f, PKI_ROLE_COLLECTOR, "c.example");
	assert_true(EVP_PKEY_is_a(key, "EC"));
	EVP_PKEY_free(key);

	o = (struct pki_issue_opts){.role = PKI_ROLE_AGENT, .name = "EXCH02", .algo_set = 1,
	                            .algo = (enum pki_algo)7};
	assert_int_equal(pki_issue(f->dir, &o, NULL, f->err, sizeof(f->err)), UV_EINVAL);
	assert_non_null(strstr(f->err, "unknown key algorithm"));
	assert_null(strstr(read_index(f), "EXCH02"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roles_parse),
	    cmocka_unit_test(test_identity_refuses),
	    cmocka_unit_test_setup_teardown(test_roles_ecdsa, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_roles_ed25519, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_ca_names_differ, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_collector_ip, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_expired, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_revoke_ecdsa, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_revoke_ed25519, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_list, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_refusals, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_mint, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_key_algo_chosen, fixture_setup, fixture_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
