#include "pki.h"

#include "log.h" /* LOG_PRINTF */
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <uv.h>

#define PKI_PATH_MAX 4096
#define PKI_PEM_MAX (64 * 1024)         /* one certificate or key */
#define PKI_LIST_MAX (64 * 1024 * 1024) /* index.txt and crl.pem of a large fleet */
#define PKI_SERIAL_BYTES 16
/* A line of index.txt is at most serial + role + name + two times + status. */
#define PKI_INDEX_LINE_MAX (PKI_SERIAL_HEX_LEN + 10 + PKI_NAME_MAX + 2 * 21 + 8)
/* notBefore and the CRL's thisUpdate lie this far in the past, so that a peer
 * whose clock runs somewhat behind accepts a certificate or CRL just made
 * (Let's Encrypt backdates by the same hour). */
#define PKI_CLOCK_SKEW_S 3600

static const char *const role_names[] = {"agent", "collector", "operator", "viewer"};
#define ROLE_COUNT ((int)(sizeof(role_names) / sizeof(role_names[0])))

struct pki_index {
	struct pki_entry *entries;
	size_t count;
	size_t cap;
};

const char *pki_role_name(enum pki_role role)
{
	if ((int)role < 0 || (int)role >= ROLE_COUNT)
		return NULL;
	return role_names[role];
}

int pki_role_parse(const char *name)
{
	for (int i = 0; i < ROLE_COUNT; i++)
		if (strcmp(name, role_names[i]) == 0)
			return i;
	return -1;
}

int pki_name_valid(const char *name)
{
	size_t len = strlen(name);
	if (len == 0 || len > PKI_NAME_MAX || name[0] == '.' || name[0] == '-')
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* An IPv6 address needs ':', which pki_name_valid refuses; it cannot form a
 * path either, since the parser accepts only hex digits, ':' and '.'. */
static int name_is_ipv6(const char *name)
{
	if (strlen(name) > PKI_NAME_MAX || !strchr(name, ':'))
		return 0;
	ASN1_OCTET_STRING *ip = a2i_IPADDRESS(name);
	int ok = ip && ASN1_STRING_length(ip) == 16;
	ASN1_OCTET_STRING_free(ip);
	ERR_clear_error();
	return ok;
}

static int name_valid_for(enum pki_role role, const char *name)
{
	return pki_name_valid(name) || (role == PKI_ROLE_COLLECTOR && name_is_ipv6(name));
}

static int role_valid(enum pki_role role)
{
	return (int)role >= 0 && (int)role < ROLE_COUNT;
}

/* Formats a message from OpenSSL's error queue, then empties the queue. */
static int ssl_fail(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	snprintf(err, errlen, "%s: %s", what, reason ? reason : "OpenSSL error");
	ERR_clear_error();
	return UV_EIO;
}

static int path_fmt(char *buf, size_t len, char *err, size_t errlen, const char *fmt, ...)
    LOG_PRINTF(5, 6);

static int path_fmt(char *buf, size_t len, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len) {
		snprintf(err, errlen, "%s: path too long", buf);
		return UV_ENAMETOOLONG;
	}
	return 0;
}

/* 1 if path exists, 0 if not, negative on another error. */
static int file_exists(const char *path)
{
	uv_fs_t req;
	int rc = uv_fs_stat(NULL, &req, path, NULL);
	uv_fs_req_cleanup(&req);
	if (rc == UV_ENOENT)
		return 0;
	return rc < 0 ? rc : 1;
}

static void file_remove(const char *path)
{
	uv_fs_t req;
	uv_fs_unlink(NULL, &req, path, NULL);
	uv_fs_req_cleanup(&req);
}

/* --- time ---------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm):
 * portable, where timegm() is not. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int64_t tm_to_epoch(const struct tm *tm)
{
	return days_from_civil(tm->tm_year + 1900LL, tm->tm_mon + 1, tm->tm_mday) * 86400 +
	       tm->tm_hour * 3600 + tm->tm_min * 60 + tm->tm_sec;
}

static int asn1_time_epoch(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;
	if (!ASN1_TIME_to_tm(t, &tm))
		return UV_EINVAL;
	*out = tm_to_epoch(&tm);
	return 0;
}

static void iso_time(int64_t secs, char buf[32])
{
	util_format_time(secs * 1000, buf, 32);
}

static int digits(const char *s, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* Parses exactly "YYYY-MM-DDTHH:MM:SSZ", as util_format_time writes it. */
static int iso_time_parse(const char *s, int64_t *out)
{
	if (strlen(s) != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
	    s[16] != ':' || s[19] != 'Z')
		return UV_EINVAL;
	struct tm tm = {0};
	int year = digits(s, 4), mon = digits(s + 5, 2), mday = digits(s + 8, 2);
	int hour = digits(s + 11, 2), min = digits(s + 14, 2), sec = digits(s + 17, 2);
	if (year < 0 || mon < 1 || mon > 12 || mday < 1 || mday > 31 || hour < 0 || hour > 23 ||
	    min < 0 || min > 59 || sec < 0 || sec > 60)
		return UV_EINVAL;
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = mday;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	*out = tm_to_epoch(&tm);
	return 0;
}

static int64_t now_s(void)
{
	return util_now_ms() / 1000;
}

static int days_arg(int days, int dflt, char *err, size_t errlen)
{
	if (days == 0)
		return dflt;
	if (days < 0 || days > PKI_DAYS_MAX) {
		snprintf(err, errlen, "days: %d is out of range; give 1 to %d", days, PKI_DAYS_MAX);
		return UV_EINVAL;
	}
	return days;
}

/* --- files ---------------------------------------------------------------- */

/* Answers an encrypted key with "no password" instead of prompting on a tty. */
static int no_password_cb(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static int cert_load(const char *path, X509 **out, char *err, size_t errlen)
{
	char *data = NULL;
	size_t len = 0;
	int rc = util_read_file(path, PKI_PEM_MAX, &data, &len, err, errlen);
	if (rc < 0)
		return rc;
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	X509 *cert = bio ? PEM_read_bio_X509(bio, NULL, no_password_cb, NULL) : NULL;
	if (!cert)
		rc = ssl_fail(err, errlen, path);
	BIO_free(bio);
	free(data);
	*out = cert;
	return rc;
}

static int key_load(const char *path, EVP_PKEY **out, char *err, size_t errlen)
{
	char *data = NULL;
	size_t len = 0;
	int rc = util_check_private_file(path, err, errlen);
	if (rc < 0)
		return rc;
	/* A key is far below util_read_file's first 4 KiB buffer, so no copy
	 * of it is left behind by a realloc. */
	rc = util_read_file(path, PKI_PEM_MAX, &data, &len, err, errlen);
	if (rc < 0)
		return rc;
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_password_cb, NULL) : NULL;
	if (!key)
		rc = ssl_fail(err, errlen, path);
	BIO_free(bio);
	OPENSSL_cleanse(data, len);
	free(data);
	*out = key;
	return rc;
}

static int crl_load(const char *path, X509_CRL **out, char *err, size_t errlen)
{
	char *data = NULL;
	size_t len = 0;
	int rc = util_read_file(path, PKI_LIST_MAX, &data, &len, err, errlen);
	if (rc < 0)
		return rc;
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	X509_CRL *crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, no_password_cb, NULL) : NULL;
	if (!crl)
		rc = ssl_fail(err, errlen, path);
	BIO_free(bio);
	free(data);
	*out = crl;
	return rc;
}

static int bio_save(BIO *bio, const char *path, int mode, char *err, size_t errlen)
{
	char *data = NULL;
	long len = BIO_get_mem_data(bio, &data);
	if (len <= 0 || !data) {
		snprintf(err, errlen, "%s: nothing to write", path);
		return UV_EIO;
	}
	return util_write_file_atomic(path, data, (size_t)len, mode, err, errlen);
}

static int key_save(const char *path, EVP_PKEY *key, char *err, size_t errlen)
{
	char *data = NULL;
	long len;
	int rc;
	/* The secure-heap BIO also clears its buffer when it grows or is freed;
	 * the explicit wipe below does not depend on that. */
	BIO *bio = BIO_new(BIO_s_secmem());
	if (!bio)
		return ssl_fail(err, errlen, path);
	if (!PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
		rc = ssl_fail(err, errlen, path);
		goto out;
	}
	rc = bio_save(bio, path, 0600, err, errlen);
out:
	len = BIO_get_mem_data(bio, &data);
	if (len > 0 && data)
		OPENSSL_cleanse(data, (size_t)len);
	BIO_free(bio);
	return rc;
}

static int cert_save(const char *path, X509 *cert, char *err, size_t errlen)
{
	int rc;
	BIO *bio = BIO_new(BIO_s_mem());
	if (!bio || !PEM_write_bio_X509(bio, cert))
		rc = ssl_fail(err, errlen, path);
	else
		rc = bio_save(bio, path, 0644, err, errlen);
	BIO_free(bio);
	return rc;
}

static int crl_save(const char *path, X509_CRL *crl, char *err, size_t errlen)
{
	int rc;
	BIO *bio = BIO_new(BIO_s_mem());
	if (!bio || !PEM_write_bio_X509_CRL(bio, crl))
		rc = ssl_fail(err, errlen, path);
	else
		rc = bio_save(bio, path, 0644, err, errlen);
	BIO_free(bio);
	return rc;
}

/* Changes to a PKI directory are serialised by an exclusive lock file, as git
 * does with index.lock: two exfleetctl runs could otherwise each rewrite
 * index.txt and lose the other's certificate, which could then never be
 * revoked. A lock left by a crash names itself in the error. */
static int lock_take(const char *dir, char *lock, size_t lock_len, char *err, size_t errlen)
{
	int rc = path_fmt(lock, lock_len, err, errlen, "%s/index.txt.lock", dir);
	if (rc < 0)
		return rc;
	uv_fs_t req;
	rc =
	    uv_fs_open(NULL, &req, lock, UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_EXCL, 0600, NULL);
	uv_fs_req_cleanup(&req);
	if (rc == UV_EEXIST) {
		snprintf(err, errlen,
		         "%s exists: another exfleetctl pki command is changing %s; "
		         "if none is running, remove the file",
		         lock, dir);
		lock[0] = '\0';
		return UV_EBUSY;
	}
	if (rc < 0) {
		snprintf(err, errlen, "cannot create %s: %s", lock, uv_strerror(rc));
		lock[0] = '\0';
		return rc;
	}
	uv_fs_close(NULL, &req, rc, NULL);
	uv_fs_req_cleanup(&req);
	return 0;
}

static void lock_release(const char *lock)
{
	if (lock[0])
		file_remove(lock);
}

/* Commands other than init need a CA; say how to make one. */
static int ca_require(const char *dir, char *err, size_t errlen)
{
	char path[PKI_PATH_MAX];
	int rc = path_fmt(path, sizeof(path), err, errlen, "%s/ca.crt", dir);
	if (rc < 0)
		return rc;
	rc = file_exists(path);
	if (rc == 0) {
		snprintf(err, errlen,
		         "%s: holds no CA (no ca.crt); create one with: "
		         "exfleetctl pki init --dir %s",
		         dir, dir);
		return UV_ENOENT;
	}
	if (rc < 0)
		snprintf(err, errlen, "cannot read %s: %s", path, uv_strerror(rc));
	return rc < 0 ? rc : 0;
}

static int ca_load(const char *dir, X509 **ca, EVP_PKEY **key, char *err, size_t errlen)
{
	char path[PKI_PATH_MAX];
	int rc = path_fmt(path, sizeof(path), err, errlen, "%s/ca.crt", dir);
	if (rc == 0)
		rc = cert_load(path, ca, err, errlen);
	if (rc == 0)
		rc = path_fmt(path, sizeof(path), err, errlen, "%s/ca.key", dir);
	if (rc == 0)
		rc = key_load(path, key, err, errlen);
	if (rc == 0 && X509_check_private_key(*ca, *key) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "%s/ca.key does not belong to %s/ca.crt; restore the pair",
		         dir, dir);
		rc = UV_EINVAL;
	}
	return rc;
}

/* --- index.txt --------------------------------------------------------------
 * "# exfleet PKI index: serial role name not_after status revoked_at", then
 * one line per certificate: "<serial> <role> <name> <not_after> V -" or
 * "... R <revoked_at>", times as 2026-11-29T10:02:11Z. */

static int serial_valid(const char *s)
{
	if (strlen(s) != PKI_SERIAL_HEX_LEN)
		return 0;
	for (const char *p = s; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return 0;
	return 1;
}

static void index_free(struct pki_index *ix)
{
	free(ix->entries);
	memset(ix, 0, sizeof(*ix));
}

static int index_add(struct pki_index *ix, const struct pki_entry *e)
{
	if (ix->count == ix->cap) {
		size_t cap = ix->cap ? ix->cap * 2 : 64;
		struct pki_entry *grown = realloc(ix->entries, cap * sizeof(*grown));
		if (!grown)
			return UV_ENOMEM;
		ix->entries = grown;
		ix->cap = cap;
	}
	ix->entries[ix->count++] = *e;
	return 0;
}

static int index_parse_line(char *line, struct pki_entry *e)
{
	char *save = NULL;
	char *field[6];
	int n = 0;
	for (char *tok = strtok_r(line, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		if (n == 6)
			return UV_EINVAL;
		field[n++] = tok;
	}
	if (n != 6 || !serial_valid(field[0]))
		return UV_EINVAL;
	int role = pki_role_parse(field[1]);
	if (role < 0 || !name_valid_for((enum pki_role)role, field[2]))
		return UV_EINVAL;
	memset(e, 0, sizeof(*e));
	memcpy(e->serial, field[0], PKI_SERIAL_HEX_LEN + 1);
	e->role = (enum pki_role)role;
	snprintf(e->name, sizeof(e->name), "%s", field[2]);
	if (iso_time_parse(field[3], &e->not_after) < 0)
		return UV_EINVAL;
	if (strcmp(field[4], "V") == 0 && strcmp(field[5], "-") == 0)
		return 0;
	if (strcmp(field[4], "R") != 0 || iso_time_parse(field[5], &e->revoked_at) < 0)
		return UV_EINVAL;
	e->revoked = 1;
	return 0;
}

static int index_load(const char *dir, struct pki_index *ix, char *err, size_t errlen)
{
	char path[PKI_PATH_MAX];
	char *data = NULL;
	size_t len = 0;
	memset(ix, 0, sizeof(*ix));
	int rc = path_fmt(path, sizeof(path), err, errlen, "%s/index.txt", dir);
	if (rc < 0)
		return rc;
	rc = util_read_file(path, PKI_LIST_MAX, &data, &len, err, errlen);
	if (rc < 0)
		return rc;
	unsigned lineno = 0;
	for (char *line = data, *next; line && *line; line = next) {
		lineno++;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		size_t l = strlen(line);
		if (l > 0 && line[l - 1] == '\r')
			line[--l] = '\0';
		if (l == 0 || line[0] == '#')
			continue;
		struct pki_entry e;
		if (index_parse_line(line, &e) < 0) {
			snprintf(err, errlen,
			         "%s:%u: malformed line; restore the file from a backup", path,
			         lineno);
			rc = UV_EINVAL;
			goto out;
		}
		rc = index_add(ix, &e);
		if (rc < 0) {
			snprintf(err, errlen, "%s: out of memory", path);
			goto out;
		}
	}
	rc = 0;
out:
	free(data);
	if (rc < 0)
		index_free(ix);
	return rc;
}

static int index_save(const char *dir, const struct pki_index *ix, char *err, size_t errlen)
{
	static const char header[] =
	    "# exfleet PKI index: serial role name not_after status revoked_at\n";
	char path[PKI_PATH_MAX];
	int rc = path_fmt(path, sizeof(path), err, errlen, "%s/index.txt", dir);
	if (rc < 0)
		return rc;
	size_t cap = sizeof(header) + ix->count * (PKI_INDEX_LINE_MAX + 1);
	char *buf = malloc(cap);
	if (!buf) {
		snprintf(err, errlen, "%s: out of memory", path);
		return UV_ENOMEM;
	}
	size_t used = (size_t)snprintf(buf, cap, "%s", header);
	for (size_t i = 0; i < ix->count; i++) {
		const struct pki_entry *e = &ix->entries[i];
		char not_after[32], revoked_at[32] = "-";
		iso_time(e->not_after, not_after);
		if (e->revoked)
			iso_time(e->revoked_at, revoked_at);
		used += (size_t)snprintf(buf + used, cap - used, "%s %s %s %s %s %s\n", e->serial,
		                         role_names[e->role], e->name, not_after,
		                         e->revoked ? "R" : "V", revoked_at);
	}
	rc = util_write_file_atomic(path, buf, used, 0644, err, errlen);
	free(buf);
	return rc;
}

/* --- building certificates ------------------------------------------------- */

static int serial_new(const struct pki_index *ix, ASN1_INTEGER **out,
                      char hex[PKI_SERIAL_HEX_LEN + 1])
{
	uint8_t bytes[PKI_SERIAL_BYTES];
	for (;;) {
		if (RAND_bytes(bytes, sizeof(bytes)) != 1)
			return UV_EIO;
		/* Positive, and the top byte never zero, so every serial is 16
		 * bytes and its hex form has a fixed width. */
		bytes[0] = (uint8_t)((bytes[0] & 0x7f) | 0x40);
		util_hex(bytes, sizeof(bytes), hex);
		size_t i = 0;
		while (ix && i < ix->count && strcmp(ix->entries[i].serial, hex) != 0)
			i++;
		if (!ix || i == ix->count)
			break;
	}
	BIGNUM *bn = BN_bin2bn(bytes, sizeof(bytes), NULL);
	*out = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
	BN_free(bn);
	return *out ? 0 : UV_ENOMEM;
}

static int serial_from_hex(const char *hex, ASN1_INTEGER **out)
{
	BIGNUM *bn = NULL;
	*out = NULL;
	if (BN_hex2bn(&bn, hex) == PKI_SERIAL_HEX_LEN)
		*out = BN_to_ASN1_INTEGER(bn, NULL);
	BN_free(bn);
	return *out ? 0 : UV_EINVAL;
}

static int subject_set(X509 *cert, const char *ou, const char *cn)
{
	X509_NAME *name = X509_get_subject_name(cert);
	if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"exfleet",
	                                -1, -1, 0))
		return UV_EIO;
	if (ou && !X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_UTF8, (const unsigned char *)ou,
	                                      -1, -1, 0))
		return UV_EIO;
	if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
	                                -1, 0))
		return UV_EIO;
	return 0;
}

static int cert_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
	int ok = ext && X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : UV_EIO;
}

/* Built as a GENERAL_NAME rather than a "DNS:..." config string, so that no
 * name can smuggle a second entry in. */
static int cert_san(X509 *cert, const char *name)
{
	int rc = UV_EIO;
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *gen = GENERAL_NAME_new();
	if (!names || !gen)
		goto out;
	ASN1_OCTET_STRING *ip = a2i_IPADDRESS(name);
	ERR_clear_error();
	if (ip) {
		GENERAL_NAME_set0_value(gen, GEN_IPADD, ip);
	} else {
		ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
		if (!dns || !ASN1_STRING_set(dns, name, -1)) {
			ASN1_IA5STRING_free(dns);
			goto out;
		}
		GENERAL_NAME_set0_value(gen, GEN_DNS, dns);
	}
	if (!sk_GENERAL_NAME_push(names, gen))
		goto out;
	gen = NULL;
	if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1)
		rc = 0;
out:
	GENERAL_NAME_free(gen);
	GENERAL_NAMES_free(names);
	return rc;
}

/* Ed25519 signs the message itself: no digest may be named. */
static const EVP_MD *sign_md(EVP_PKEY *key)
{
	return EVP_PKEY_is_a(key, "ED25519") ? NULL : EVP_sha256();
}

static EVP_PKEY *key_new(enum pki_algo algo)
{
	if (algo == PKI_ALGO_ED25519)
		return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

enum pki_algo pki_leaf_algo(enum pki_role role, enum pki_algo ca_algo)
{
	return role == PKI_ROLE_AGENT ? PKI_ALGO_ED25519 : ca_algo;
}

static int key_algo(EVP_PKEY *key, enum pki_algo *algo)
{
	if (EVP_PKEY_is_a(key, "ED25519")) {
		*algo = PKI_ALGO_ED25519;
		return 0;
	}
	if (EVP_PKEY_is_a(key, "EC")) {
		*algo = PKI_ALGO_ECDSA_P256;
		return 0;
	}
	return UV_EINVAL;
}

static int cert_times(X509 *cert, int64_t not_before, int64_t not_after)
{
	if (!ASN1_TIME_set(X509_getm_notBefore(cert), (time_t)not_before) ||
	    !ASN1_TIME_set(X509_getm_notAfter(cert), (time_t)not_after))
		return UV_EIO;
	return 0;
}

static int ca_cert_new(EVP_PKEY *key, int days, X509 **out)
{
	int rc = UV_EIO;
	ASN1_INTEGER *serial = NULL;
	char serial_hex[PKI_SERIAL_HEX_LEN + 1];
	X509 *ca = X509_new();
	if (!ca || !X509_set_version(ca, X509_VERSION_3))
		goto out;
	if ((rc = serial_new(NULL, &serial, serial_hex)) < 0)
		goto out;
	rc = UV_EIO;
	if (!X509_set_serialNumber(ca, serial))
		goto out;
	/* A random suffix tells two deployments' CAs apart by name. */
	uint8_t suffix[4];
	char cn[32], suffix_hex[2 * sizeof(suffix) + 1];
	if (RAND_bytes(suffix, sizeof(suffix)) != 1)
		goto out;
	util_hex(suffix, sizeof(suffix), suffix_hex);
	snprintf(cn, sizeof(cn), "exfleet CA %s", suffix_hex);
	if (subject_set(ca, NULL, cn) < 0 || !X509_set_issuer_name(ca, X509_get_subject_name(ca)))
		goto out;
	int64_t now = now_s();
	if (cert_times(ca, now - PKI_CLOCK_SKEW_S, now + (int64_t)days * 86400) < 0 ||
	    !X509_set_pubkey(ca, key))
		goto out;
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, ca, ca, NULL, NULL, 0);
	/* pathlen:0: this CA signs leaves only, never another CA. */
	if (cert_ext(ca, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
	    cert_ext(ca, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
	    cert_ext(ca, &ctx, NID_subject_key_identifier, "hash") < 0)
		goto out;
	if (!X509_sign(ca, key, sign_md(key)))
		goto out;
	*out = ca;
	ca = NULL;
	rc = 0;
out:
	ASN1_INTEGER_free(serial);
	X509_free(ca);
	return rc;
}

static int leaf_cert_new(X509 *ca, EVP_PKEY *ca_key, EVP_PKEY *key, const struct pki_index *ix,
                         const struct pki_issue_opts *o, int days, X509 **out,
                         struct pki_entry *entry)
{
	int rc = UV_EIO;
	ASN1_INTEGER *serial = NULL;
	X509 *cert = X509_new();
	memset(entry, 0, sizeof(*entry));
	if (!cert || !X509_set_version(cert, X509_VERSION_3))
		goto out;
	if ((rc = serial_new(ix, &serial, entry->serial)) < 0)
		goto out;
	rc = UV_EIO;
	if (!X509_set_serialNumber(cert, serial) ||
	    subject_set(cert, role_names[o->role], o->name) < 0 ||
	    !X509_set_issuer_name(cert, X509_get_subject_name(ca)))
		goto out;
	int64_t now = now_s() - o->backdate_s;
	if (cert_times(cert, now - PKI_CLOCK_SKEW_S, now + (int64_t)days * 86400) < 0)
		goto out;
	/* A certificate cannot outlive the CA that vouches for it. */
	if (ASN1_TIME_compare(X509_get0_notAfter(cert), X509_get0_notAfter(ca)) > 0 &&
	    !X509_set1_notAfter(cert, X509_get0_notAfter(ca)))
		goto out;
	if (!X509_set_pubkey(cert, key))
		goto out;

	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, ca, cert, NULL, NULL, 0);
	const char *eku = o->role == PKI_ROLE_COLLECTOR ? "serverAuth" : "clientAuth";
	if (cert_ext(cert, &ctx, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    cert_ext(cert, &ctx, NID_key_usage, "critical,digitalSignature") < 0 ||
	    cert_ext(cert, &ctx, NID_ext_key_usage, eku) < 0 ||
	    cert_ext(cert, &ctx, NID_subject_key_identifier, "hash") < 0 ||
	    cert_ext(cert, &ctx, NID_authority_key_identifier, "keyid:always") < 0)
		goto out;
	/* The collector's name, for clients to check. An agent is named by its
	 * CN alone: it serves nothing, and every collector keeps its certificate
	 * in memory for the session's life. */
	if (o->role == PKI_ROLE_COLLECTOR && cert_san(cert, o->name) < 0)
		goto out;
	if (!X509_sign(cert, ca_key, sign_md(ca_key)))
		goto out;
	entry->role = o->role;
	snprintf(entry->name, sizeof(entry->name), "%s", o->name);
	if (asn1_time_epoch(X509_get0_notAfter(cert), &entry->not_after) < 0)
		goto out;
	*out = cert;
	cert = NULL;
	rc = 0;
out:
	ASN1_INTEGER_free(serial);
	X509_free(cert);
	return rc;
}

/* The CRL number of dir's current crl.pem plus one; 1 for the first. */
static BIGNUM *crl_number_next(const char *dir)
{
	char path[PKI_PATH_MAX], scratch[256];
	X509_CRL *crl = NULL;
	ASN1_INTEGER *number = NULL;
	BIGNUM *next = NULL;
	if (path_fmt(path, sizeof(path), scratch, sizeof(scratch), "%s/crl.pem", dir) == 0 &&
	    file_exists(path) == 1 && crl_load(path, &crl, scratch, sizeof(scratch)) == 0)
		number = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
	next = number ? ASN1_INTEGER_to_BN(number, NULL) : BN_new();
	if (next && !BN_add_word(next, 1)) {
		BN_free(next);
		next = NULL;
	}
	ASN1_INTEGER_free(number);
	X509_CRL_free(crl);
	ERR_clear_error();
	return next;
}

/* Signs a CRL of every revoked certificate in the index and writes crl.pem. */
static int crl_write(const char *dir, X509 *ca, EVP_PKEY *ca_key, const struct pki_index *ix,
                     int days, char *err, size_t errlen)
{
	char path[PKI_PATH_MAX];
	int rc = path_fmt(path, sizeof(path), err, errlen, "%s/crl.pem", dir);
	if (rc < 0)
		return rc;
	int signed_ok = 0; /* failures before signing are OpenSSL's */
	X509_EXTENSION *akid = NULL;
	ASN1_INTEGER *number = NULL;
	BIGNUM *number_bn = crl_number_next(dir);
	ASN1_TIME *t = ASN1_TIME_new();
	X509_CRL *crl = X509_CRL_new();
	if (!number_bn || !t || !crl || !X509_CRL_set_version(crl, X509_CRL_VERSION_2) ||
	    !X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)))
		goto out;
	int64_t now = now_s();
	if (!ASN1_TIME_set(t, (time_t)(now - PKI_CLOCK_SKEW_S)) ||
	    !X509_CRL_set1_lastUpdate(crl, t) ||
	    !ASN1_TIME_set(t, (time_t)(now + (int64_t)days * 86400)) ||
	    !X509_CRL_set1_nextUpdate(crl, t))
		goto out;
	for (size_t i = 0; i < ix->count; i++) {
		const struct pki_entry *e = &ix->entries[i];
		if (!e->revoked)
			continue;
		ASN1_INTEGER *serial = NULL;
		X509_REVOKED *r = X509_REVOKED_new();
		int ok = r && serial_from_hex(e->serial, &serial) == 0 &&
		         X509_REVOKED_set_serialNumber(r, serial) &&
		         ASN1_TIME_set(t, (time_t)e->revoked_at) &&
		         X509_REVOKED_set_revocationDate(r, t) && X509_CRL_add0_revoked(crl, r);
		ASN1_INTEGER_free(serial);
		if (!ok) {
			X509_REVOKED_free(r);
			goto out;
		}
	}
	if (!X509_CRL_sort(crl))
		goto out;
	/* crlNumber lets a collector tell a newer CRL from an older one. */
	number = BN_to_ASN1_INTEGER(number_bn, NULL);
	if (!number || !X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, 0))
		goto out;
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, ca, NULL, NULL, crl, 0);
	akid = X509V3_EXT_nconf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
	if (!akid || !X509_CRL_add_ext(crl, akid, -1))
		goto out;
	if (!X509_CRL_sign(crl, ca_key, sign_md(ca_key)))
		goto out;
	signed_ok = 1;
	rc = crl_save(path, crl, err, errlen);
out:
	if (!signed_ok)
		rc = ssl_fail(err, errlen, path);
	X509_EXTENSION_free(akid);
	ASN1_INTEGER_free(number);
	BN_free(number_bn);
	ASN1_TIME_free(t);
	X509_CRL_free(crl);
	return rc;
}

/* --- public ------------------------------------------------------------------ */

int pki_cert_path(const char *dir, enum pki_role role, const char *name, char *crt, size_t crt_len,
                  char *key, size_t key_len)
{
	char scratch[64];
	if (!role_valid(role) || !name_valid_for(role, name))
		return UV_EINVAL;
	if (crt && path_fmt(crt, crt_len, scratch, sizeof(scratch), "%s/%s/%s.crt", dir,
	                    role_names[role], name) < 0)
		return UV_ENAMETOOLONG;
	if (key && path_fmt(key, key_len, scratch, sizeof(scratch), "%s/%s/%s.key", dir,
	                    role_names[role], name) < 0)
		return UV_ENAMETOOLONG;
	return 0;
}

int pki_init(const char *dir, enum pki_algo algo, int days, char *err, size_t errlen)
{
	static const char *const files[] = {"ca.key", "ca.crt", "index.txt"};
	char lock[PKI_PATH_MAX] = "", key_path[PKI_PATH_MAX], crt_path[PKI_PATH_MAX];
	EVP_PKEY *key = NULL;
	X509 *ca = NULL;
	struct pki_index empty = {0};
	int written = 0; /* how many of files[] this call wrote */
	int rc;

	ERR_clear_error();
	days = days_arg(days, PKI_CA_DAYS_DEFAULT, err, errlen);
	if (days < 0)
		return days;
	if (algo != PKI_ALGO_ECDSA_P256 && algo != PKI_ALGO_ED25519) {
		snprintf(err, errlen, "unknown key algorithm %d", (int)algo);
		return UV_EINVAL;
	}
	if ((rc = util_mkdir_p(dir, 0700, err, errlen)) < 0)
		return rc;
	if ((rc = lock_take(dir, lock, sizeof(lock), err, errlen)) < 0)
		return rc;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char path[PKI_PATH_MAX];
		if ((rc = path_fmt(path, sizeof(path), err, errlen, "%s/%s", dir, files[i])) < 0)
			goto out;
		rc = file_exists(path);
		if (rc != 0) {
			if (rc > 0)
				snprintf(err, errlen,
				         "%s: already holds a CA (%s); use another --dir", dir,
				         files[i]);
			else
				snprintf(err, errlen, "cannot read %s: %s", path, uv_strerror(rc));
			rc = rc > 0 ? UV_EEXIST : rc;
			goto out;
		}
	}
	if ((rc = path_fmt(key_path, sizeof(key_path), err, errlen, "%s/ca.key", dir)) < 0 ||
	    (rc = path_fmt(crt_path, sizeof(crt_path), err, errlen, "%s/ca.crt", dir)) < 0)
		goto out;
	key = key_new(algo);
	if (!key) {
		rc = ssl_fail(err, errlen, "generating the CA key");
		goto out;
	}
	if ((rc = ca_cert_new(key, days, &ca)) < 0) {
		rc = ssl_fail(err, errlen, "building the CA certificate");
		goto out;
	}
	/* ca.key first: once it exists the directory counts as holding a CA. */
	if ((rc = key_save(key_path, key, err, errlen)) < 0)
		goto out;
	written = 1;
	if ((rc = cert_save(crt_path, ca, err, errlen)) < 0)
		goto out;
	written = 2;
	if ((rc = crl_write(dir, ca, key, &empty, PKI_CRL_DAYS_DEFAULT, err, errlen)) < 0 ||
	    (rc = index_save(dir, &empty, err, errlen)) < 0)
		goto out;
	written = 3;
	rc = 0;
out:
	/* A half-made CA would block the next init: take it away again. */
	if (rc < 0 && written > 0) {
		char path[PKI_PATH_MAX], scratch[64];
		for (int i = 0; i < written; i++)
			if (path_fmt(path, sizeof(path), scratch, sizeof(scratch), "%s/%s", dir,
			             files[i]) == 0)
				file_remove(path);
		if (path_fmt(path, sizeof(path), scratch, sizeof(scratch), "%s/crl.pem", dir) == 0)
			file_remove(path);
	}
	lock_release(lock);
	X509_free(ca);
	EVP_PKEY_free(key);
	return rc;
}

int pki_issue(const char *dir, const struct pki_issue_opts *o, struct pki_entry *issued, char *err,
              size_t errlen)
{
	char lock[PKI_PATH_MAX] = "", crt_path[PKI_PATH_MAX], key_path[PKI_PATH_MAX];
	char role_dir[PKI_PATH_MAX];
	struct pki_index ix = {0};
	struct pki_entry entry;
	X509 *ca = NULL, *cert = NULL;
	EVP_PKEY *ca_key = NULL, *key = NULL;
	enum pki_algo algo;
	int indexed = 0;
	int rc, days;

	ERR_clear_error();
	if (!role_valid(o->role)) {
		snprintf(err, errlen, "unknown role %d", (int)o->role);
		return UV_EINVAL;
	}
	if (!o->name || !name_valid_for(o->role, o->name)) {
		snprintf(err, errlen,
		         "'%s': not a valid %s name; use 1 to %d of A-Z a-z 0-9 . _ -, "
		         "not starting with . or -",
		         o->name ? o->name : "", role_names[o->role], PKI_NAME_MAX);
		return UV_EINVAL;
	}
	days = days_arg(o->days, PKI_LEAF_DAYS_DEFAULT, err, errlen);
	if (days < 0)
		return days;
	if (o->backdate_s < 0 || o->backdate_s > (int64_t)PKI_DAYS_MAX * 86400) {
		snprintf(err, errlen, "backdate: %lld seconds is out of range",
		         (long long)o->backdate_s);
		return UV_EINVAL;
	}
	if ((rc = pki_cert_path(dir, o->role, o->name, crt_path, sizeof(crt_path), key_path,
	                        sizeof(key_path))) < 0) {
		snprintf(err, errlen, "%s: path too long", dir);
		return rc;
	}
	if ((rc = path_fmt(role_dir, sizeof(role_dir), err, errlen, "%s/%s", dir,
	                   role_names[o->role])) < 0)
		return rc;
	if ((rc = ca_require(dir, err, errlen)) < 0)
		return rc;
	if ((rc = lock_take(dir, lock, sizeof(lock), err, errlen)) < 0)
		return rc;
	if ((rc = ca_load(dir, &ca, &ca_key, err, errlen)) < 0 ||
	    (rc = index_load(dir, &ix, err, errlen)) < 0)
		goto out;

	int64_t now = now_s();
	for (size_t i = 0; i < ix.count && !o->force; i++) {
		const struct pki_entry *e = &ix.entries[i];
		if (e->role == o->role && strcmp(e->name, o->name) == 0 && !e->revoked &&
		    e->not_after > now) {
			char until[32];
			iso_time(e->not_after, until);
			snprintf(err, errlen,
			         "%s %s already has a valid certificate (serial %s, expires %s); "
			         "use --force to issue another, or revoke it first",
			         role_names[o->role], o->name, e->serial, until);
			rc = UV_EEXIST;
			goto out;
		}
	}
	if (X509_cmp_time(X509_get0_notAfter(ca), NULL) <= 0) {
		snprintf(err, errlen,
		         "%s/ca.crt has expired; create a new CA with exfleetctl pki init", dir);
		rc = UV_EINVAL;
		goto out;
	}
	if (key_algo(ca_key, &algo) < 0) {
		snprintf(err, errlen, "%s/ca.key: neither ECDSA nor Ed25519", dir);
		rc = UV_EINVAL;
		goto out;
	}
	if (o->algo_set && o->algo != PKI_ALGO_ECDSA_P256 && o->algo != PKI_ALGO_ED25519) {
		snprintf(err, errlen, "unknown key algorithm %d", (int)o->algo);
		rc = UV_EINVAL;
		goto out;
	}
	if ((rc = util_mkdir_p(role_dir, 0700, err, errlen)) < 0)
		goto out;
	key = key_new(o->algo_set ? o->algo : pki_leaf_algo(o->role, algo));
	if (!key) {
		rc = ssl_fail(err, errlen, "generating a key");
		goto out;
	}
	if (leaf_cert_new(ca, ca_key, key, &ix, o, days, &cert, &entry) < 0) {
		rc = ssl_fail(err, errlen, crt_path);
		goto out;
	}
	/* The index first: a certificate that exists anywhere can be revoked. */
	if ((rc = index_add(&ix, &entry)) < 0) {
		snprintf(err, errlen, "%s: out of memory", dir);
		goto out;
	}
	if ((rc = index_save(dir, &ix, err, errlen)) < 0)
		goto out;
	indexed = 1;
	if ((rc = key_save(key_path, key, err, errlen)) < 0 ||
	    (rc = cert_save(crt_path, cert, err, errlen)) < 0)
		goto out;
	if (issued)
		*issued = entry;
	rc = 0;
out:
	/* Files not written: drop the entry, or it would block the next issue. */
	if (rc < 0 && indexed) {
		char scratch[256];
		ix.count--;
		index_save(dir, &ix, scratch, sizeof(scratch));
	}
	lock_release(lock);
	index_free(&ix);
	X509_free(cert);
	X509_free(ca);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
	return rc;
}

int pki_revoke(const char *dir, const char *serial_or_name, pki_entry_cb cb, void *arg, char *err,
               size_t errlen)
{
	char lock[PKI_PATH_MAX] = "", serial[PKI_SERIAL_HEX_LEN + 1] = "";
	struct pki_index ix = {0};
	X509 *ca = NULL;
	EVP_PKEY *ca_key = NULL;
	unsigned char *hit = NULL;
	size_t hits = 0, already = 0;
	int rc;

	ERR_clear_error();
	if (!serial_or_name || !*serial_or_name) {
		snprintf(err, errlen, "nothing to revoke: give a serial or a name");
		return UV_EINVAL;
	}
	/* Serials are compared in lower case, as the index holds them. */
	if (strlen(serial_or_name) == PKI_SERIAL_HEX_LEN) {
		for (size_t i = 0; i < PKI_SERIAL_HEX_LEN; i++) {
			char c = serial_or_name[i];
			serial[i] = (char)(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
		}
		serial[PKI_SERIAL_HEX_LEN] = '\0';
		if (!serial_valid(serial))
			serial[0] = '\0';
	}
	if ((rc = ca_require(dir, err, errlen)) < 0)
		return rc;
	if ((rc = lock_take(dir, lock, sizeof(lock), err, errlen)) < 0)
		return rc;
	if ((rc = ca_load(dir, &ca, &ca_key, err, errlen)) < 0 ||
	    (rc = index_load(dir, &ix, err, errlen)) < 0)
		goto out;
	hit = calloc(ix.count ? ix.count : 1, 1);
	if (!hit) {
		snprintf(err, errlen, "%s: out of memory", dir);
		rc = UV_ENOMEM;
		goto out;
	}

	int by_serial = 0;
	for (size_t i = 0; serial[0] && i < ix.count; i++) {
		if (strcmp(ix.entries[i].serial, serial) != 0)
			continue;
		by_serial = 1;
		if (ix.entries[i].revoked) {
			char when[32];
			iso_time(ix.entries[i].revoked_at, when);
			snprintf(err, errlen, "serial %s (%s %s) was already revoked at %s", serial,
			         role_names[ix.entries[i].role], ix.entries[i].name, when);
			rc = UV_EALREADY;
			goto out;
		}
		hit[i] = 1;
		hits++;
	}
	for (size_t i = 0; !by_serial && i < ix.count; i++) {
		if (strcmp(ix.entries[i].name, serial_or_name) != 0)
			continue;
		if (ix.entries[i].revoked) {
			already++;
			continue;
		}
		hit[i] = 1;
		hits++;
	}
	if (hits == 0) {
		if (already)
			snprintf(err, errlen, "every certificate named '%s' is already revoked",
			         serial_or_name);
		else
			snprintf(err, errlen,
			         "%s: no certificate has serial or name '%s'; see exfleetctl pki "
			         "list --dir %s",
			         dir, serial_or_name, dir);
		rc = already ? UV_EALREADY : UV_ENOENT;
		goto out;
	}

	int64_t now = now_s();
	for (size_t i = 0; i < ix.count; i++) {
		if (!hit[i])
			continue;
		ix.entries[i].revoked = 1;
		ix.entries[i].revoked_at = now;
	}
	/* The index first: if the CRL cannot be written, pki_crl_refresh
	 * rebuilds it from the index. */
	if ((rc = index_save(dir, &ix, err, errlen)) < 0)
		goto out;
	if ((rc = crl_write(dir, ca, ca_key, &ix, PKI_CRL_DAYS_DEFAULT, err, errlen)) < 0) {
		size_t l = strlen(err);
		snprintf(err + l, errlen > l ? errlen - l : 0,
		         "; index.txt records the revocation: run exfleetctl pki crl --dir %s",
		         dir);
		goto out;
	}
	for (size_t i = 0; cb && i < ix.count; i++)
		if (hit[i])
			cb(&ix.entries[i], arg);
	rc = 0;
out:
	lock_release(lock);
	free(hit);
	index_free(&ix);
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	return rc;
}

int pki_crl_refresh(const char *dir, int days, char *err, size_t errlen)
{
	char lock[PKI_PATH_MAX] = "";
	struct pki_index ix = {0};
	X509 *ca = NULL;
	EVP_PKEY *ca_key = NULL;
	int rc;

	ERR_clear_error();
	days = days_arg(days, PKI_CRL_DAYS_DEFAULT, err, errlen);
	if (days < 0)
		return days;
	if ((rc = ca_require(dir, err, errlen)) < 0)
		return rc;
	if ((rc = lock_take(dir, lock, sizeof(lock), err, errlen)) < 0)
		return rc;
	if ((rc = ca_load(dir, &ca, &ca_key, err, errlen)) < 0 ||
	    (rc = index_load(dir, &ix, err, errlen)) < 0)
		goto out;
	rc = crl_write(dir, ca, ca_key, &ix, days, err, errlen);
out:
	lock_release(lock);
	index_free(&ix);
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	return rc;
}

int pki_list(const char *dir, pki_entry_cb cb, void *arg, char *err, size_t errlen)
{
	struct pki_index ix;
	int rc = ca_require(dir, err, errlen);
	if (rc < 0)
		return rc;
	/* No lock: index.txt is replaced by rename, so it is always whole. */
	if ((rc = index_load(dir, &ix, err, errlen)) < 0)
		return rc;
	for (size_t i = 0; i < ix.count; i++)
		cb(&ix.entries[i], arg);
	index_free(&ix);
	return 0;
}

/* The one entry of nid in a subject, as text; fails if absent or repeated. */
static int subject_field(const X509_NAME *subject, int nid, char *out, size_t out_len)
{
	int idx = X509_NAME_get_index_by_NID(subject, nid, -1);
	if (idx < 0 || X509_NAME_get_index_by_NID(subject, nid, idx) >= 0)
		return UV_EINVAL;
	const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
	int len = ASN1_STRING_length(s);
	const unsigned char *data = ASN1_STRING_get0_data(s);
	/* Valid names are ASCII, so the bytes of any string type are the
	 * characters; a wide (BMP) string shows its NULs and is refused. */
	if (len <= 0 || (size_t)len >= out_len || memchr(data, '\0', (size_t)len))
		return UV_EINVAL;
	memcpy(out, data, (size_t)len);
	out[len] = '\0';
	return 0;
}

int pki_cert_identity(const X509 *cert, char *name, size_t name_len, enum pki_role *role)
{
	char cn[PKI_NAME_MAX + 1], ou[16];
	const X509_NAME *subject = cert ? X509_get_subject_name(cert) : NULL;
	if (!subject || subject_field(subject, NID_commonName, cn, sizeof(cn)) < 0 ||
	    subject_field(subject, NID_organizationalUnitName, ou, sizeof(ou)) < 0)
		return UV_EINVAL;
	int r = pki_role_parse(ou);
	if (r < 0 || !name_valid_for((enum pki_role)r, cn))
		return UV_EINVAL;
	if (strlen(cn) >= name_len)
		return UV_ENOBUFS;
	memcpy(name, cn, strlen(cn) + 1);
	*role = (enum pki_role)r;
	return 0;
}

/* --- certificates minted in memory (load tests) ---------------------------- */

struct pki_ca {
	X509 *cert;
	EVP_PKEY *key;
	enum pki_algo algo;
};

int pki_ca_load(const char *dir, struct pki_ca **out, char *err, size_t errlen)
{
	struct pki_ca *ca = NULL;
	int rc;

	ERR_clear_error();
	*out = NULL;
	if ((rc = ca_require(dir, err, errlen)) < 0)
		return rc;
	ca = calloc(1, sizeof(*ca));
	if (!ca) {
		snprintf(err, errlen, "%s: out of memory", dir);
		return UV_ENOMEM;
	}
	if ((rc = ca_load(dir, &ca->cert, &ca->key, err, errlen)) < 0)
		goto out;
	if (X509_cmp_time(X509_get0_notAfter(ca->cert), NULL) <= 0) {
		snprintf(err, errlen,
		         "%s/ca.crt has expired; create a new CA with exfleetctl pki init", dir);
		rc = UV_EINVAL;
		goto out;
	}
	if (key_algo(ca->key, &ca->algo) < 0) {
		snprintf(err, errlen, "%s/ca.key: neither ECDSA nor Ed25519", dir);
		rc = UV_EINVAL;
		goto out;
	}
	*out = ca;
	ca = NULL;
	rc = 0;
out:
	pki_ca_free(ca);
	return rc;
}

int pki_ca_keygen(const struct pki_ca *ca, enum pki_role role, EVP_PKEY **out, char *err,
                  size_t errlen)
{
	ERR_clear_error();
	*out = key_new(pki_leaf_algo(role, ca->algo));
	if (!*out)
		return ssl_fail(err, errlen, "generating a key");
	return 0;
}

int pki_ca_mint(const struct pki_ca *ca, enum pki_role role, const char *name, EVP_PKEY *key,
                int days, X509 **out, char *err, size_t errlen)
{
	struct pki_issue_opts o = {.role = role, .name = name};
	struct pki_entry entry;

	ERR_clear_error();
	*out = NULL;
	if (!role_valid(role)) {
		snprintf(err, errlen, "unknown role %d", (int)role);
		return UV_EINVAL;
	}
	if (!name || !name_valid_for(role, name)) {
		snprintf(err, errlen,
		         "'%s': not a valid %s name; use 1 to %d of A-Z a-z 0-9 . _ -, "
		         "not starting with . or -",
		         name ? name : "", role_names[role], PKI_NAME_MAX);
		return UV_EINVAL;
	}
	o.days = days_arg(days, PKI_LEAF_DAYS_DEFAULT, err, errlen);
	if (o.days < 0)
		return o.days;
	/* No index to check serials against: 128 random bits do not collide. */
	if (leaf_cert_new(ca->cert, ca->key, key, NULL, &o, o.days, out, &entry) < 0)
		return ssl_fail(err, errlen, name);
	return 0;
}

void pki_ca_free(struct pki_ca *ca)
{
	if (!ca)
		return;
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	free(ca);
}
