/* The deployment's private CA: creates it, issues and revokes certificates,
 * keeps the CRL, and reads a peer's identity out of a verified certificate.
 *
 * Layout of a PKI directory:
 *   DIR/ca.crt, DIR/ca.key (0600)   the CA
 *   DIR/crl.pem                     revoked serials, signed by the CA
 *   DIR/index.txt                   one line per issued certificate
 *   DIR/<role>/<name>.crt, .key     issued certificates and their keys (0600)
 * DIR and DIR/<role> are created 0700. Every file is replaced atomically, so a
 * reader (a collector reloading crl.pem) never sees half a file. Commands that
 * change the directory hold DIR/index.txt.lock while they run.
 *
 * Subjects are O=exfleet, OU=<role>, CN=<name>. The CRL's nextUpdate is
 * PKI_CRL_DAYS_DEFAULT days after it is signed; once it passes, peers that check
 * the CRL refuse every certificate, so refresh it in time with pki_crl_refresh()
 * (exfleetctl pki crl) and copy crl.pem to the collectors.
 *
 * Functions return 0 or a negative libuv error code and write a one-line message,
 * naming the file or name and what to do, into err. */
#ifndef EXFLEET_PKI_H
#define EXFLEET_PKI_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#define PKI_CA_DAYS_DEFAULT 3650
#define PKI_LEAF_DAYS_DEFAULT 825
#define PKI_CRL_DAYS_DEFAULT 365
#define PKI_DAYS_MAX 36500
#define PKI_NAME_MAX 64       /* upper bound of an X.509 common name */
#define PKI_SERIAL_HEX_LEN 32 /* 128-bit serials, lower-case hex */

enum pki_algo { PKI_ALGO_ECDSA_P256, PKI_ALGO_ED25519 };
enum pki_role { PKI_ROLE_AGENT, PKI_ROLE_COLLECTOR, PKI_ROLE_OPERATOR, PKI_ROLE_VIEWER };

/* "agent", "collector", "operator", "viewer"; NULL for an unknown value. */
const char *pki_role_name(enum pki_role role);
/* The role named, or -1 when the name is unknown. */
int pki_role_parse(const char *name);
/* 1 when name may be a host id, operator name or collector DNS name:
 * [A-Za-z0-9._-], 1..64 characters, not starting with '.' or '-'. Such a name
 * is safe as a file name (no path can be formed from it). A collector may also
 * be named by an IPv6 address, which pki_issue accepts separately. */
int pki_name_valid(const char *name);

/* One issued certificate, as recorded in DIR/index.txt. Times are Unix seconds. */
struct pki_entry {
	char serial[PKI_SERIAL_HEX_LEN + 1];
	enum pki_role role;
	char name[PKI_NAME_MAX + 1];
	int64_t not_after;
	int revoked;
	int64_t revoked_at; /* 0 unless revoked */
};
typedef void (*pki_entry_cb)(const struct pki_entry *entry, void *arg);

/* Creates the CA in dir (created if missing). days 0 means PKI_CA_DAYS_DEFAULT.
 * Refuses a dir that already holds a CA. Writes an empty CRL and index. */
int pki_init(const char *dir, enum pki_algo algo, int days, char *err, size_t errlen);

struct pki_issue_opts {
	enum pki_role role;
	const char *name;
	int days;           /* 0: PKI_LEAF_DAYS_DEFAULT; never beyond the CA's notAfter */
	int64_t backdate_s; /* tests: shift notBefore and notAfter this far into the past */
	int force;          /* issue even though role+name holds a valid certificate */
	int algo_set;       /* 0: the key is of pki_leaf_algo()'s algorithm; 1: of algo */
	enum pki_algo algo;
};

/* The key algorithm a holder gets unless told otherwise. Agents get Ed25519
 * whatever the CA's algorithm: a collector keeps every agent's certificate
 * for as long as its session lives, and a parsed Ed25519 key takes 1.8 KB
 * less of its memory than a P-256 one. The others get the CA's algorithm, so
 * that an ECDSA deployment's collector and operators stay usable in browsers. */
enum pki_algo pki_leaf_algo(enum pki_role role, enum pki_algo ca_algo);

/* Issues a certificate and a new key for o->role and o->name, writing pki_cert_path()'s files. Without o->force it
 * refuses when the role+name already holds a certificate that is neither
 * revoked nor expired; with it, the files are replaced and the earlier
 * certificate stays valid until it expires or is revoked. issued (may be NULL)
 * receives the new index entry. */
int pki_issue(const char *dir, const struct pki_issue_opts *o, struct pki_entry *issued, char *err,
              size_t errlen);

/* Revokes the certificate with that serial, or every unrevoked certificate of
 * that name (any role), then re-signs the CRL. cb (may be NULL) is called for
 * each certificate revoked. An unknown target is UV_ENOENT; a target already
 * revoked is UV_EALREADY. */
int pki_revoke(const char *dir, const char *serial_or_name, pki_entry_cb cb, void *arg, char *err,
               size_t errlen);

/* Re-signs DIR/crl.pem from the index with nextUpdate days from now
 * (0: PKI_CRL_DAYS_DEFAULT). */
int pki_crl_refresh(const char *dir, int days, char *err, size_t errlen);

/* Calls cb for every certificate in DIR/index.txt, in issue order. */
int pki_list(const char *dir, pki_entry_cb cb, void *arg, char *err, size_t errlen);

/* A peer's identity from a certificate that has already been verified against
 * the CA: the name (CN) and role (OU). Fails when either is missing, repeated,
 * or not a name pki_issue would have written. */
int pki_cert_identity(const X509 *cert, char *name, size_t name_len, enum pki_role *role);

/* DIR/<role>/<name>.crt and .key. Fails on a name that is not valid for role. */
int pki_cert_path(const char *dir, enum pki_role role, const char *name, char *crt, size_t crt_len,
                  char *key, size_t key_len);

/* Certificates minted in memory, for load tests that need thousands of
 * identities: the CA is loaded once and each certificate costs one signature,
 * for a key the caller holds (many certificates may share one key). A minted
 * certificate is written nowhere and is not in DIR/index.txt, so pki_list does
 * not show it and pki_revoke cannot revoke it by name: mint them only from a
 * test deployment's CA, and with a short validity. Otherwise the certificate is
 * the one pki_issue would make (subject, extensions, random 128-bit serial). */
struct pki_ca;

/* Loads DIR/ca.crt and DIR/ca.key (which must be private), refusing an
 * expired CA. Free with pki_ca_free. */
int pki_ca_load(const char *dir, struct pki_ca **out, char *err, size_t errlen);
/* A new key of the algorithm pki_issue would give a holder of role. */
int pki_ca_keygen(const struct pki_ca *ca, enum pki_role role, EVP_PKEY **out, char *err,
                  size_t errlen);
/* Signs a certificate for role and name over key's public half. days 0 means
 * PKI_LEAF_DAYS_DEFAULT, never beyond the CA's notAfter. Free *out with X509_free. */
int pki_ca_mint(const struct pki_ca *ca, enum pki_role role, const char *name, EVP_PKEY *key,
                int days, X509 **out, char *err, size_t errlen);
void pki_ca_free(struct pki_ca *ca);

#endif
