/* Operator-signed commands. exfleetctl signs a command with the operator's
 * key; the agent (and, as a second line, the collector) verifies it against
 * the deployment CA. The collector never holds an operator key, so it can
 * relay a command but cannot make one.
 *
 * Command.body holds the exact encoding of a CommandBody and the signature
 * covers those bytes, never a re-encoding:
 *   signature = Sign(operator key, "exfleet-command-v1" NUL || body)
 * ECDSA P-256 signs with SHA-256 (DER signature), Ed25519 signs the message
 * itself (pure Ed25519). The prefix keeps a command signature from being
 * taken for any other signature an operator key might make.
 * Command.issuer_certificate is the operator's certificate, DER.
 *
 * A batch is many commands under one signature (a wave's, from one
 * operator at one moment). Each command keeps its own body and every check
 * below; the signature covers a hash tree of the bodies instead of one body:
 *   leaf      = SHA-256(0x00 || body)
 *   node      = SHA-256(0x01 || left || right), pairs taken level by level;
 *               a lone last node moves up a level as it is
 *   signature = Sign(operator key, "exfleet-command-batch-v1" NUL
 *                    || batch_size (4 bytes, big-endian) || root)
 * and each command carries batch_size, its batch_index and batch_path: the
 * sibling hashes from its leaf up. The path is checked with the signature,
 * so a batch proves what the same commands signed one by one would, for one
 * signature instead of one each. A verifier that sees many of a batch's
 * commands (the collector's relay) remembers the last signature it found
 * good (struct sign_memo) and then pays only each path's hashes.
 *
 * Functions return 0 or a negative libuv error code. */
#ifndef EXFLEET_SIGN_H
#define EXFLEET_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "exfleet.pb-c.h"
#include "pki.h"

/* Domain-separation prefix, NUL included, before the body bytes. */
#define SIGN_COMMAND_CONTEXT "exfleet-command-v1"
#define SIGN_COMMAND_ID_MAX 64                            /* lower-case hex digits */
#define SIGN_COMMAND_LIFETIME_MAX_MS (24 * 3600 * 1000LL) /* expires_at - issued_at */
#define SIGN_BODY_MAX (256 * 1024)                        /* encoded CommandBody */
#define SIGN_CERT_MAX (16 * 1024)                         /* issuer certificate, DER */
#define SIGN_SIGNATURE_MAX 256
#define SIGN_OPERATOR_MAX (PKI_NAME_MAX + 1) /* operator_out of sign_verify_command */
#define SIGN_BATCH_CONTEXT "exfleet-command-batch-v1"
#define SIGN_BATCH_MAX (1u << 20) /* commands in one batch */
#define SIGN_PATH_MAX 20          /* hashes in a path: log2(SIGN_BATCH_MAX) */
#define SIGN_HASH_LEN 32

/* The last batch signature a verifier found good: zero it before first use,
 * and keep one per thread. */
struct sign_memo {
	uint8_t seen[SIGN_HASH_LEN]; /* SHA-256 of certificate, signed message, signature */
	int valid;
};

/* 1 when id is a command id: 1 to SIGN_COMMAND_ID_MAX lower-case hex digits. */
int sign_command_id_valid(const char *id);

/* The digest a signature by key uses: NULL for Ed25519 (which signs the
 * message itself), SHA-256 for ECDSA P-256, the one curve pki_issue uses.
 * 0, or UV_EINVAL for any other key. */
int sign_key_digest(EVP_PKEY *key, const EVP_MD **md);

/* Encodes body and signs it with operator_key, whose certificate
 * operator_cert is attached. out is initialised and its three byte fields
 * are heap buffers: release them with sign_command_free (also after a
 * failure, which leaves them empty). Refuses a key that does not belong to
 * the certificate, or that is neither ECDSA P-256 nor Ed25519. */
int sign_command(const Exfleet__CommandBody *body, EVP_PKEY *operator_key, X509 *operator_cert,
                 Exfleet__Command *out, char *err, size_t errlen);
/* Frees the fields sign_command filled (not the struct) and empties them. */
void sign_command_free(Exfleet__Command *cmd);

/* Signs n bodies as one batch (above), filling out[0..n-1] as sign_command
 * does, each with its batch fields; one body is signed alone. Release each
 * with sign_command_free (also after a failure, which leaves all empty).
 * n is 1 to SIGN_BATCH_MAX. */
int sign_commands(const Exfleet__CommandBody *const *bodies, size_t n, EVP_PKEY *operator_key,
                  X509 *operator_cert, Exfleet__Command *out, char *err, size_t errlen);

/* The trust a verifier applies: the CA certificate(s) of ca_file (PEM) and,
 * when crl_file is not NULL or empty, that CA's CRL (PEM), which must be
 * signed by it. Build it once; it is reused for every command. */
struct sign_verifier;

struct sign_verifier *sign_verifier_new(const char *ca_file, const char *crl_file, char *err,
                                        size_t errlen);
void sign_verifier_free(struct sign_verifier *v);
/* Re-reads the CRL file (after exfleetctl pki crl or a revocation). On any
 * failure the CRL loaded before stays in force. A verifier built without a
 * CRL file has nothing to reload and returns 0. */
int sign_verifier_reload_crl(struct sign_verifier *v, char *err, size_t errlen);

/* Checks a certificate as of now_ms: it chains to the CA for client use, is
 * not revoked (when there is a CRL), is within its validity, and names a
 * holder of role. name (SIGN_OPERATOR_MAX bytes) receives its CN as soon
 * as the chain is verified, even when the role is then refused; it is
 * empty before that. The reasons are those listed for sign_verify_command,
 * with the expected role's name in place of "operator". Returns 0, UV_EACCES
 * with a reason, or UV_ENOMEM. */
int sign_verifier_check_cert(struct sign_verifier *v, X509 *cert, enum pki_role role,
                             int64_t now_ms, char *name, char *reason, size_t reasonlen);

/* Verifies a command for the host my_host_id at now_ms, allowing skew_ms
 * (taken as 0 to 7 days) of clock difference on the command's own times; not
 * on certificate validity, which pki_issue already backdates by an hour.
 * The checks, in order, and the reason each gives when it fails:
 *   sizes of body, certificate, signature  "command body of N bytes exceeds M" (and alike)
 *   certificate present                    "no issuer certificate"
 *   certificate parses (DER, no trailer)   "issuer certificate does not parse (DER)"
 *   chains to the CA                       "operator certificate not issued by the trusted CA"
 *   for client use                         "operator certificate not valid for client
 *                                           authentication"
 *   not revoked (with a CRL)               "operator certificate revoked"
 *   CRL current (with a CRL)               "the CRL has expired: run exfleetctl pki crl and
 *                                           install the new crl.pem",
 *                                          "the CRL is not valid yet: check the clocks"
 *   CA, then certificate, in validity      "the trusted CA expired at <time>",
 *                                          "operator certificate expired at
 *                                           2026-11-29T10:02:11Z",
 *                                          "operator certificate not valid before <time>"
 *   any other chain failure                "operator certificate does not verify: <OpenSSL>"
 *   an exfleet identity (OU, CN)           "signer certificate names no exfleet identity"
 *   role operator                          "signer 'victor' has role viewer, not operator"
 *   key algorithm                          "signer key is neither ECDSA P-256 nor Ed25519"
 *   batch fields, for a batch              "batch of N commands exceeds M",
 *                                          "batch index N is not below its size M",
 *                                          "batch path does not fit its index and size"
 *                                          (also for batch fields on a lone command)
 *   signature over the body or batch root  "bad signature"
 *   body decodes                           "command body does not decode"
 *   target_host_id == my_host_id           "addressed to host 'EXCH02', not 'EXCH01'"
 *   id is 1..64 lower-case hex             "command id is not 1 to 64 lower-case hex digits"
 *   issued_at <= now + skew                "issued at <time>, in the future: check the clocks"
 *   expires_at >= now - skew               "expired at <time>"
 *   expires_at >= issued_at                "expires before it is issued"
 *   expires_at - issued_at <= 24 h         "lifetime of N s exceeds 24 h"
 * <time> is written as util_format_time does. Returns 0 when the command is
 * accepted: *body_out then holds the decoded body (free it with
 * exfleet__command_body__free_unpacked) and operator_out (SIGN_OPERATOR_MAX
 * bytes) the signer's CN. Otherwise *body_out is NULL and the result is
 * UV_ETIMEDOUT for an expired command (answer it COMMAND_EXPIRED), UV_EACCES
 * for an untrusted signer or a bad signature, UV_EINVAL for a malformed or
 * misaddressed command, or UV_ENOMEM; operator_out names the signer once the
 * certificate chain verified (for the audit log), and is empty before that.
 * Whether the id was seen before is the caller's check (its replay cache),
 * made after this one accepts: an unsigned command must not fill the cache. */
int sign_verify_command(struct sign_verifier *v, const Exfleet__Command *cmd,
                        const char *my_host_id, int64_t now_ms, int64_t skew_ms,
                        Exfleet__CommandBody **body_out, char *operator_out, char *reason,
                        size_t reasonlen);

/* sign_verify_command's checks with the signer's key taken as trusted: the
 * sizes, then from the key algorithm on, with the same reasons and results.
 * For a caller that verified the key's certificate a moment ago (the
 * collector's relay, which sees a wave's commands from one operator). */
int sign_verify_command_key(EVP_PKEY *key, const Exfleet__Command *cmd, const char *my_host_id,
                            int64_t now_ms, int64_t skew_ms, Exfleet__CommandBody **body_out,
                            char *reason, size_t reasonlen);
/* As sign_verify_command_key, remembering in memo (may be NULL) the last
 * batch signature found good: a command whose certificate, batch root and
 * signature are the memo's skips the signature check. key must be the public
 * key of cmd's issuer_certificate, as the caller verified it. */
int sign_verify_command_memo(EVP_PKEY *key, const Exfleet__Command *cmd, const char *my_host_id,
                             int64_t now_ms, int64_t skew_ms, struct sign_memo *memo,
                             Exfleet__CommandBody **body_out, char *reason, size_t reasonlen);

#endif
