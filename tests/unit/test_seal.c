/* Sealed passwords: the agent's sealing key on disk, its signature, and
 * seal/open with every kind of tampering refused alike.
 *
 * That seal_free_secret wipes before it frees is not tested: reading freed
 * memory is undefined (and ASan stops it), and a copy proves nothing about
 * the original. The wipe is one OPENSSL_cleanse call, read in review. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <uv.h>

#include "pki.h"
#include "seal.h"
#include "sign.h"
#include "util.h"
#include "testutil.h"

#define HOST "EXCH01"
#define CMD_ID "0123456789abcdef0123456789abcdef"
#define PASSWORD "S3cret-pa55 w0rd!"

static const char tampered[] =
    "sealed secret does not open (tampered, or sealed to another host or command)";
static const char *const algo_names[] = {"ECDSA", "Ed25519"};

struct fixture {
	char root[1024];
	char pki[2][1200]; /* ECDSA P-256, Ed25519 */
	char other[1200];  /* another deployment */
	struct sign_verifier *v[2];
	EVP_PKEY *agent_key; /* HOST's sealing key */
	EVP_PKEY *other_key; /* another agent's sealing key */
	uint8_t agent_pub[SEAL_KEY_LEN];
	char err[512];
};

static struct fixture *fx;

/* Keys of algo, whatever the role's default: both kinds of agent key are
 * covered. */
static void issue(const char *dir, enum pki_role role, const char *name, enum pki_algo algo)
{
	struct pki_issue_opts o = {.role = role, .name = name, .algo_set = 1, .algo = algo};
	int rc = pki_issue(dir, &o, NULL, fx->err, sizeof(fx->err));
	if (rc < 0)
		print_error("pki_issue %s: %s\n", name, fx->err);
	assert_int_equal(rc, 0);
}

static int group_setup(void **state)
{
	char path[1300], ca[1300], crl[1300];
	fx = calloc(1, sizeof(*fx));
	if (!fx || test_tmpdir("test_seal", fx->root, sizeof(fx->root)) < 0)
		return -1;
	for (int a = 0; a < 2; a++) {
		char dir[sizeof(fx->pki[a])];
		snprintf(dir, sizeof(dir), "%s/%s", fx->root, algo_names[a]);
		memcpy(fx->pki[a], dir, sizeof(dir));
		if (pki_init(fx->pki[a], a == 0 ? PKI_ALGO_ECDSA_P256 : PKI_ALGO_ED25519, 0,
		             fx->err, sizeof(fx->err)) < 0)
			return -1;
		enum pki_algo algo = a == 0 ? PKI_ALGO_ECDSA_P256 : PKI_ALGO_ED25519;
		issue(fx->pki[a], PKI_ROLE_AGENT, "EXCH01", algo);
		issue(fx->pki[a], PKI_ROLE_AGENT, "EXCH02", algo);
		issue(fx->pki[a], PKI_ROLE_AGENT, "EXCH03", algo);
		issue(fx->pki[a], PKI_ROLE_OPERATOR, "alice", algo);
		if (pki_revoke(fx->pki[a], "EXCH03", NULL, NULL, fx->err, sizeof(fx->err)) < 0)
			return -1;
		snprintf(ca, sizeof(ca), "%s/ca.crt", fx->pki[a]);
		snprintf(crl, sizeof(crl), "%s/crl.pem", fx->pki[a]);
		fx->v[a] = sign_verifier_new(ca, crl, fx->err, sizeof(fx->err));
		if (!fx->v[a])
			return -1;
	}
	char other[sizeof(fx->other)];
	snprintf(other, sizeof(other), "%s/other", fx->root);
	memcpy(fx->other, other, sizeof(other));
	if (pki_init(fx->other, PKI_ALGO_ECDSA_P256, 0, fx->err, sizeof(fx->err)) < 0)
		return -1;
	issue(fx->other, PKI_ROLE_AGENT, "EXCH01", PKI_ALGO_ECDSA_P256);

	snprintf(path, sizeof(path), "%s/agent.seal", fx->root);
	if (seal_key_load_or_create(path, &fx->agent_key, fx->err, sizeof(fx->err)) < 0 ||
	    seal_key_public(fx->agent_key, fx->agent_pub) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/other.seal", fx->root);
	if (seal_key_load_or_create(path, &fx->other_key, fx->err, sizeof(fx->err)) < 0)
		return -1;
	*state = fx;
	return 0;
}

static int group_teardown(void **state)
{
	for (int a = 0; a < 2; a++)
		sign_verifier_free(fx->v[a]);
	EVP_PKEY_free(fx->agent_key);
	EVP_PKEY_free(fx->other_key);
	test_rmtree(fx->root);
	free(fx);
	fx = NULL;
	return 0;
}

static unsigned file_mode(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (unsigned)st.st_mode & 07777;
}

static char *slurp(const char *path, size_t *len)
{
	char *data = NULL;
	assert_int_equal(util_read_file(path, 1 << 16, &data, len, fx->err, sizeof(fx->err)), 0);
	return data;
}

static int contains(const uint8_t *hay, size_t len, const char *needle, size_t n)
{
	for (size_t i = 0; i + n <= len; i++)
		if (memcmp(hay + i, needle, n) == 0)
			return 1;
	return 0;
}

static EVP_PKEY *load_key(const char *dir, enum pki_role role, const char *name)
{
	char crt[1400], key[1400];
	assert_int_equal(pki_cert_path(dir, role, name, crt, sizeof(crt), key, sizeof(key)), 0);
	EVP_PKEY *k = test_read_key(key);
	assert_non_null(k);
	return k;
}

static X509 *load_cert(const char *dir, enum pki_role role, const char *name)
{
	char crt[1400];
	assert_int_equal(pki_cert_path(dir, role, name, crt, sizeof(crt), NULL, 0), 0);
	X509 *c = test_read_cert(crt);
	assert_non_null(c);
	return c;
}

static void seal_ok(const char *host, const char *cmd, const void *secret, size_t len,
                    Exfleet__SealedSecret *out)
{
	int rc = seal_secret(fx->agent_pub, host, cmd, secret, len, out, fx->err, sizeof(fx->err));
	if (rc < 0)
		print_error("seal_secret: %s\n", fx->err);
	assert_int_equal(rc, 0);
}

static void expect_opens(EVP_PKEY *key, const char *host, const char *cmd,
                         const Exfleet__SealedSecret *in, const void *want, size_t want_len)
{
	uint8_t *secret = NULL;
	size_t len = 0;
	char reason[256] = "";
	int rc = seal_open(key, host, cmd, in, &secret, &len, reason, sizeof(reason));
	if (rc < 0)
		print_error("seal_open: %s\n", reason);
	assert_int_equal(rc, 0);
	assert_non_null(secret);
	assert_int_equal(len, want_len);
	assert_memory_equal(secret, want, want_len);
	assert_int_equal(secret[len], '\0');
	seal_free_secret(secret, len);
}

static void expect_refused(EVP_PKEY *key, const char *host, const char *cmd,
                           const Exfleet__SealedSecret *in, int want_rc, const char *want_reason)
{
	uint8_t *secret = (uint8_t *)"sentinel";
	size_t len = 99;
	char reason[256] = "";
	int rc = seal_open(key, host, cmd, in, &secret, &len, reason, sizeof(reason));
	assert_int_equal(rc, want_rc);
	assert_null(secret);
	assert_int_equal(len, 0);
	assert_string_equal(reason, want_reason);
	assert_int_equal(ERR_peek_error(), 0);
}

/* --- the sealing key on disk ------------------------------------------------------ */

static void test_key_created_private(void **state)
{
	char path[1300];
	uint8_t pub[SEAL_KEY_LEN], again_pub[SEAL_KEY_LEN];
	size_t len, len2;
	EVP_PKEY *key = NULL, *again = NULL;

	snprintf(path, sizeof(path), "%s/created.seal", fx->root);
	assert_int_equal(seal_key_load_or_create(path, &key, fx->err, sizeof(fx->err)), 0);
	assert_true(EVP_PKEY_is_a(key, "X25519"));
	assert_int_equal(file_mode(path), 0600);
	char *pem = slurp(path, &len);
	assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"));

	/* Loaded, not made again: same key, file untouched. */
	assert_int_equal(seal_key_load_or_create(path, &again, fx->err, sizeof(fx->err)), 0);
	assert_int_equal(seal_key_public(key, pub), 0);
	assert_int_equal(seal_key_public(again, again_pub), 0);
	assert_memory_equal(pub, again_pub, SEAL_KEY_LEN);
	char *pem2 = slurp(path, &len2);
	assert_int_equal(len, len2);
	assert_memory_equal(pem, pem2, len);
	free(pem);
	free(pem2);
	EVP_PKEY_free(key);
	EVP_PKEY_free(again);

	/* Two agents, two keys. */
	uint8_t other_pub[SEAL_KEY_LEN];
	assert_int_equal(seal_key_public(fx->other_key, other_pub), 0);
	assert_memory_not_equal(fx->agent_pub, other_pub, SEAL_KEY_LEN);
}

static void test_key_readable_refused(void **state)
{
	static const int modes[] = {0644, 0640, 0604, 0660};
	char path[1300];
	EVP_PKEY *key = NULL;
	snprintf(path, sizeof(path), "%s/readable.seal", fx->root);
	assert_int_equal(seal_key_load_or_create(path, &key, fx->err, sizeof(fx->err)), 0);
	EVP_PKEY_free(key);
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		key = (EVP_PKEY *)fx; /* must be reset */
		assert_int_equal(chmod(path, (mode_t)modes[i]), 0);
		assert_int_equal(seal_key_load_or_create(path, &key, fx->err, sizeof(fx->err)),
		                 UV_EPERM);
		assert_null(key);
		assert_non_null(strstr(fx->err, path));
		assert_non_null(strstr(fx->err, "chmod 600"));
		/* Refused, not replaced by a new key. */
		assert_int_equal(file_mode(path), (unsigned)modes[i]);
	}
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(seal_key_load_or_create(path, &key, fx->err, sizeof(fx->err)), 0);
	EVP_PKEY_free(key);
}

static void test_key_bad_file(void **state)
{
	char path[1300];
	EVP_PKEY *key = NULL;

	snprintf(path, sizeof(path), "%s/garbage.seal", fx->root);
	assert_int_equal(
	    util_write_file_atomic(path, "not a key\n", 10, 0600, fx->err, sizeof(fx->err)), 0);
	assert_int_equal(seal_key_load_or_create(path, &key, fx->err, sizeof(fx->err)), UV_EINVAL);
	assert_null(key);
	assert_non_null(strstr(fx->err, "not a PEM private key"));

	/* A private key, but for signing, not sealing: an agent's certificate key. */
	char crt[1400], agent_key[1400];
	size_t len;
	assert_int_equal(pki_cert_path(fx->pki[1], PKI_ROLE_AGENT, HOST, crt, sizeof(crt),
	                               agent_key, sizeof(agent_key)),
	                 0);
	char *pem = slurp(agent_key, &len);
	snprintf(path, sizeof(path), "%s/ed25519.seal", fx->root);
	assert_int_equal(util_write_file_atomic(path, pem, len, 0600, fx->err, sizeof(fx->err)), 0);
	free(pem);
	assert_int_equal(seal_key_load_or_create(path, &key, fx->err, sizeof(fx->err)), UV_EINVAL);
	assert_null(key);
	assert_non_null(strstr(fx->err, "not an X25519 key"));

	/* Its directory missing: an error naming the file, nothing made. */
	snprintf(path, sizeof(path), "%s/no/such/dir/agent.seal", fx->root);
	assert_true(seal_key_load_or_create(path, &key, fx->err, sizeof(fx->err)) < 0);
	assert_null(key);
	assert_non_null(strstr(fx->err, "agent.seal"));
	assert_int_equal(ERR_peek_error(), 0);

	/* seal_key_public takes only X25519 keys. */
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	uint8_t pub[SEAL_KEY_LEN];
	assert_int_equal(seal_key_public(ed, pub), UV_EINVAL);
	EVP_PKEY_free(ed);
}

/* --- seal and open -------------------------------------------------------------------- */

static void test_round_trip(void **state)
{
	Exfleet__SealedSecret a, b;
	seal_ok(HOST, CMD_ID, PASSWORD, strlen(PASSWORD), &a);
	assert_int_equal(a.ephemeral_public_key.len, SEAL_KEY_LEN);
	assert_int_equal(a.nonce.len, SEAL_NONCE_LEN);
	assert_int_equal(a.ciphertext.len, strlen(PASSWORD) + SEAL_TAG_LEN);
	assert_false(contains(a.ciphertext.data, a.ciphertext.len, "S3cret", 6));
	expect_opens(fx->agent_key, HOST, CMD_ID, &a, PASSWORD, strlen(PASSWORD));

	/* Each sealing is fresh: its own ephemeral key and nonce. */
	seal_ok(HOST, CMD_ID, PASSWORD, strlen(PASSWORD), &b);
	assert_memory_not_equal(a.ephemeral_public_key.data, b.ephemeral_public_key.data,
	                        SEAL_KEY_LEN);
	assert_memory_not_equal(a.nonce.data, b.nonce.data, SEAL_NONCE_LEN);
	assert_memory_not_equal(a.ciphertext.data, b.ciphertext.data, a.ciphertext.len);
	expect_opens(fx->agent_key, HOST, CMD_ID, &b, PASSWORD, strlen(PASSWORD));
	seal_secret_free(&a);
	seal_secret_free(&b);
	assert_null(a.ciphertext.data);

	/* Empty, binary with NULs, and the largest allowed. */
	uint8_t big[SEAL_SECRET_MAX + 1];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	static const size_t sizes[] = {0, 1, 5, SEAL_SECRET_MAX};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		seal_ok(HOST, CMD_ID, big, sizes[i], &a);
		expect_opens(fx->agent_key, HOST, CMD_ID, &a, big, sizes[i]);
		seal_secret_free(&a);
	}
	assert_int_equal(seal_secret(fx->agent_pub, HOST, CMD_ID, big, SEAL_SECRET_MAX + 1, &a,
	                             fx->err, sizeof(fx->err)),
	                 UV_EINVAL);
	assert_string_equal(fx->err, "secret of 1025 bytes exceeds 1024");
	assert_null(a.ciphertext.data);
	assert_int_equal(
	    seal_secret(fx->agent_pub, "", CMD_ID, big, 1, &a, fx->err, sizeof(fx->err)),
	    UV_EINVAL);
	assert_int_equal(seal_secret(fx->agent_pub, HOST, "", big, 1, &a, fx->err, sizeof(fx->err)),
	                 UV_EINVAL);
	seal_secret_free(&a);
}

/* Every single-bit change anywhere is refused with the same reason. */
static void test_tampered(void **state)
{
	Exfleet__SealedSecret s;
	seal_ok(HOST, CMD_ID, PASSWORD, strlen(PASSWORD), &s);
	ProtobufCBinaryData *fields[] = {&s.ephemeral_public_key, &s.nonce, &s.ciphertext};
	for (size_t f = 0; f < 3; f++) {
		for (size_t i = 0; i < fields[f]->len; i++) {
			for (int bit = 0; bit < 8; bit += 7) {
				fields[f]->data[i] ^= (uint8_t)(1 << bit);
				expect_refused(fx->agent_key, HOST, CMD_ID, &s, UV_EACCES,
				               tampered);
				fields[f]->data[i] ^= (uint8_t)(1 << bit);
			}
		}
	}
	/* Cut short by a byte: the tag no longer matches. */
	s.ciphertext.len--;
	expect_refused(fx->agent_key, HOST, CMD_ID, &s, UV_EACCES, tampered);
	s.ciphertext.len++;
	/* The all-zero (small-order) ephemeral key. */
	uint8_t saved[SEAL_KEY_LEN];
	memcpy(saved, s.ephemeral_public_key.data, SEAL_KEY_LEN);
	memset(s.ephemeral_public_key.data, 0, SEAL_KEY_LEN);
	expect_refused(fx->agent_key, HOST, CMD_ID, &s, UV_EACCES, tampered);
	memcpy(s.ephemeral_public_key.data, saved, SEAL_KEY_LEN);
	/* Undone, it opens again: the refusals above were the changes. */
	expect_opens(fx->agent_key, HOST, CMD_ID, &s, PASSWORD, strlen(PASSWORD));
	seal_secret_free(&s);
}

static void test_wrong_binding(void **state)
{
	Exfleet__SealedSecret s;
	seal_ok(HOST, CMD_ID, PASSWORD, strlen(PASSWORD), &s);
	expect_refused(fx->agent_key, "EXCH02", CMD_ID, &s, UV_EACCES, tampered);
	expect_refused(fx->agent_key, HOST, "0123456789abcdef0123456789abcdee", &s, UV_EACCES,
	               tampered);
	expect_refused(fx->other_key, HOST, CMD_ID, &s, UV_EACCES, tampered);
	seal_secret_free(&s);

	/* The separator keeps host and command id apart. */
	seal_ok("EXCH01", "ab12", PASSWORD, strlen(PASSWORD), &s);
	expect_refused(fx->agent_key, "EXCH01a", "b12", &s, UV_EACCES, tampered);
	expect_refused(fx->agent_key, "EXCH0", "1ab12", &s, UV_EACCES, tampered);
	expect_opens(fx->agent_key, "EXCH01", "ab12", &s, PASSWORD, strlen(PASSWORD));
	seal_secret_free(&s);

	/* Sealed to the other agent's key: this agent cannot open it. */
	uint8_t other_pub[SEAL_KEY_LEN];
	assert_int_equal(seal_key_public(fx->other_key, other_pub), 0);
	assert_int_equal(seal_secret(other_pub, HOST, CMD_ID, (const uint8_t *)PASSWORD,
	                             strlen(PASSWORD), &s, fx->err, sizeof(fx->err)),
	                 0);
	expect_refused(fx->agent_key, HOST, CMD_ID, &s, UV_EACCES, tampered);
	expect_opens(fx->other_key, HOST, CMD_ID, &s, PASSWORD, strlen(PASSWORD));
	seal_secret_free(&s);
}

static void test_malformed(void **state)
{
	Exfleet__SealedSecret s;
	uint8_t big[SEAL_SECRET_MAX + SEAL_TAG_LEN + 1] = {0};
	seal_ok(HOST, CMD_ID, PASSWORD, strlen(PASSWORD), &s);
	ProtobufCBinaryData ct = s.ciphertext;

	s.ephemeral_public_key.len--;
	expect_refused(fx->agent_key, HOST, CMD_ID, &s, UV_EINVAL,
	               "sealed secret malformed: ephemeral key of 31 bytes, not 32");
	s.ephemeral_public_key.len++;
	s.nonce.len--;
	expect_refused(fx->agent_key, HOST, CMD_ID, &s, UV_EINVAL,
	               "sealed secret malformed: nonce of 11 bytes, not 12");
	s.nonce.len++;
	s.ciphertext.len = SEAL_TAG_LEN - 1;
	expect_refused(fx->agent_key, HOST, CMD_ID, &s, UV_EINVAL,
	               "sealed secret malformed: ciphertext of 15 bytes, not 16 to 1040");
	s.ciphertext.data = big;
	s.ciphertext.len = sizeof(big);
	expect_refused(fx->agent_key, HOST, CMD_ID, &s, UV_EINVAL,
	               "sealed secret malformed: ciphertext of 1041 bytes, not 16 to 1040");
	s.ciphertext = ct;
	/* Not a sealing key at all. */
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	expect_refused(ed, HOST, CMD_ID, &s, UV_EINVAL,
	               "the agent's sealing key is not an X25519 key");
	EVP_PKEY_free(ed);
	seal_secret_free(&s);
}

/* The documented construction, opened independently of seal_open (through
 * EVP_PKEY_HKDF rather than EVP_KDF): what exfleetctl seals, any correct
 * implementation of the format can open. */
static void test_format(void **state)
{
	Exfleet__SealedSecret s;
	uint8_t shared[32], key[32], salt[64], pt[64];
	size_t shared_len = sizeof(shared), key_len = sizeof(key);
	int n = 0, fin = 0;
	seal_ok(HOST, CMD_ID, PASSWORD, strlen(PASSWORD), &s);

	EVP_PKEY *eph =
	    EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, s.ephemeral_public_key.data, 32);
	EVP_PKEY_CTX *dctx = EVP_PKEY_CTX_new(fx->agent_key, NULL);
	assert_non_null(eph);
	assert_int_equal(EVP_PKEY_derive_init(dctx), 1);
	assert_int_equal(EVP_PKEY_derive_set_peer(dctx, eph), 1);
	assert_int_equal(EVP_PKEY_derive(dctx, shared, &shared_len), 1);
	EVP_PKEY_CTX_free(dctx);
	EVP_PKEY_free(eph);

	memcpy(salt, s.ephemeral_public_key.data, 32);
	memcpy(salt + 32, fx->agent_pub, 32);
	EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
	assert_int_equal(EVP_PKEY_derive_init(kctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_hkdf_md(kctx, EVP_sha256()), 1);
	assert_int_equal(EVP_PKEY_CTX_set1_hkdf_salt(kctx, salt, 64), 1);
	assert_int_equal(EVP_PKEY_CTX_set1_hkdf_key(kctx, shared, 32), 1);
	assert_int_equal(
	    EVP_PKEY_CTX_add1_hkdf_info(kctx, (const unsigned char *)"exfleet-seal-v1", 15), 1);
	assert_int_equal(EVP_PKEY_derive(kctx, key, &key_len), 1);
	EVP_PKEY_CTX_free(kctx);

	static const char aad[] = HOST "\0" CMD_ID; /* sizeof - 1: no NUL at the end */
	size_t ct_len = s.ciphertext.len - 16;
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	assert_int_equal(EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, s.nonce.data), 1);
	assert_int_equal(
	    EVP_DecryptUpdate(c, NULL, &n, (const unsigned char *)aad, sizeof(aad) - 1), 1);
	assert_int_equal(EVP_DecryptUpdate(c, pt, &n, s.ciphertext.data, (int)ct_len), 1);
	assert_int_equal(
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, s.ciphertext.data + ct_len), 1);
	assert_int_equal(EVP_DecryptFinal_ex(c, pt + n, &fin), 1);
	EVP_CIPHER_CTX_free(c);
	assert_int_equal((size_t)(n + fin), strlen(PASSWORD));
	assert_memory_equal(pt, PASSWORD, strlen(PASSWORD));
	seal_secret_free(&s);
}

/* --- the signature over the sealing key ------------------------------------------------ */

static void expect_key_refused(struct sign_verifier *v, X509 *cert, const char *host,
                               const uint8_t *pub, const uint8_t *sig, size_t sig_len,
                               const char *want)
{
	char reason[256] = "";
	assert_int_equal(seal_key_verify(v, cert, host, pub, sig, sig_len, reason, sizeof(reason)),
	                 UV_EACCES);
	assert_string_equal(reason, want);
	assert_int_equal(ERR_peek_error(), 0);
}

static void sign_key(EVP_PKEY *cert_key, const char *host, const uint8_t *pub, uint8_t **sig,
                     size_t *sig_len)
{
	int rc = seal_key_sign(cert_key, host, pub, sig, sig_len, fx->err, sizeof(fx->err));
	if (rc < 0)
		print_error("seal_key_sign: %s\n", fx->err);
	assert_int_equal(rc, 0);
}

static void test_key_signature(void **state)
{
	static const char bad_sig[] = "sealing key signature does not verify";
	for (int a = 0; a < 2; a++) {
		struct sign_verifier *v = fx->v[a];
		EVP_PKEY *k1 = load_key(fx->pki[a], PKI_ROLE_AGENT, "EXCH01");
		EVP_PKEY *k2 = load_key(fx->pki[a], PKI_ROLE_AGENT, "EXCH02");
		X509 *c1 = load_cert(fx->pki[a], PKI_ROLE_AGENT, "EXCH01");
		uint8_t *sig = NULL, *sig2 = NULL;
		size_t sig_len = 0, sig2_len = 0;
		char reason[256] = "";

		sign_key(k1, "EXCH01", fx->agent_pub, &sig, &sig_len);
		assert_int_equal(seal_key_verify(v, c1, "EXCH01", fx->agent_pub, sig, sig_len,
		                                 reason, sizeof(reason)),
		                 0);

		/* Another agent's key signed it; the certificate is EXCH01's. */
		sign_key(k2, "EXCH01", fx->agent_pub, &sig2, &sig2_len);
		expect_key_refused(v, c1, "EXCH01", fx->agent_pub, sig2, sig2_len, bad_sig);
		free(sig2);
		/* EXCH01's key, but signed for another host id. */
		sign_key(k1, "EXCH02", fx->agent_pub, &sig2, &sig2_len);
		expect_key_refused(v, c1, "EXCH01", fx->agent_pub, sig2, sig2_len, bad_sig);
		/* ... and offered for that host with EXCH01's certificate. */
		expect_key_refused(v, c1, "EXCH02", fx->agent_pub, sig2, sig2_len,
		                   "agent certificate names 'EXCH01', not 'EXCH02'");
		free(sig2);

		/* A swapped public key, a changed signature, none at all. */
		uint8_t swapped[SEAL_KEY_LEN];
		memcpy(swapped, fx->agent_pub, SEAL_KEY_LEN);
		swapped[0] ^= 1;
		expect_key_refused(v, c1, "EXCH01", swapped, sig, sig_len, bad_sig);
		sig[sig_len / 2] ^= 1;
		expect_key_refused(v, c1, "EXCH01", fx->agent_pub, sig, sig_len, bad_sig);
		sig[sig_len / 2] ^= 1;
		expect_key_refused(v, c1, "EXCH01", fx->agent_pub, sig, 0, bad_sig);
		expect_key_refused(v, c1, "EXCH01", fx->agent_pub, NULL, 0, bad_sig);

		/* The certificate must be a current, unrevoked agent's of this CA. */
		X509 *alice = load_cert(fx->pki[a], PKI_ROLE_OPERATOR, "alice");
		expect_key_refused(v, alice, "alice", fx->agent_pub, sig, sig_len,
		                   "signer 'alice' has role operator, not agent");
		X509_free(alice);
		X509 *c3 = load_cert(fx->pki[a], PKI_ROLE_AGENT, "EXCH03");
		EVP_PKEY *k3 = load_key(fx->pki[a], PKI_ROLE_AGENT, "EXCH03");
		sign_key(k3, "EXCH03", fx->agent_pub, &sig2, &sig2_len);
		expect_key_refused(v, c3, "EXCH03", fx->agent_pub, sig2, sig2_len,
		                   "agent certificate revoked");
		free(sig2);
		EVP_PKEY_free(k3);
		X509_free(c3);
		X509 *foreign = load_cert(fx->other, PKI_ROLE_AGENT, "EXCH01");
		EVP_PKEY *fk = load_key(fx->other, PKI_ROLE_AGENT, "EXCH01");
		sign_key(fk, "EXCH01", fx->agent_pub, &sig2, &sig2_len);
		expect_key_refused(v, foreign, "EXCH01", fx->agent_pub, sig2, sig2_len,
		                   "agent certificate not issued by the trusted CA");
		free(sig2);
		EVP_PKEY_free(fk);
		X509_free(foreign);

		free(sig);
		X509_free(c1);
		EVP_PKEY_free(k1);
		EVP_PKEY_free(k2);
	}
}

/* The documented message, signed independently of seal_key_sign. */
static void test_key_signature_format(void **state)
{
	static const char prefix[] = "exfleet-sealing-key-v1";
	for (int a = 0; a < 2; a++) {
		EVP_PKEY *k1 = load_key(fx->pki[a], PKI_ROLE_AGENT, "EXCH01");
		X509 *c1 = load_cert(fx->pki[a], PKI_ROLE_AGENT, "EXCH01");
		uint8_t msg[sizeof(prefix) + 7 + SEAL_KEY_LEN], sig[256];
		memcpy(msg, prefix, sizeof(prefix));
		memcpy(msg + sizeof(prefix), "EXCH01", 7);
		memcpy(msg + sizeof(prefix) + 7, fx->agent_pub, SEAL_KEY_LEN);
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		size_t sig_len = sizeof(sig);
		assert_int_equal(
		    EVP_DigestSignInit(ctx, NULL, a == 0 ? EVP_sha256() : NULL, NULL, k1), 1);
		assert_int_equal(EVP_DigestSign(ctx, sig, &sig_len, msg, sizeof(msg)), 1);
		EVP_MD_CTX_free(ctx);
		char reason[256] = "";
		int rc = seal_key_verify(fx->v[a], c1, "EXCH01", fx->agent_pub, sig, sig_len,
		                         reason, sizeof(reason));
		if (rc < 0)
			print_error("%s\n", reason);
		assert_int_equal(rc, 0);
		X509_free(c1);
		EVP_PKEY_free(k1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_key_created_private),
	    cmocka_unit_test(test_key_readable_refused),
	    cmocka_unit_test(test_key_bad_file),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_tampered),
	    cmocka_unit_test(test_wrong_binding),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_format),
	    cmocka_unit_test(test_key_signature),
	    cmocka_unit_test(test_key_signature_format),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
