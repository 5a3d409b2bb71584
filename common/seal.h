/* Passwords sealed to one agent, for one command.
 *
 * Each agent holds an X25519 sealing key, made at its first start. It signs
 * the public half with its certificate key and announces both in Hello;
 * exfleetctl checks that signature against the agent's certificate (so a
 * collector cannot swap in a key of its own), then seals the password:
 *   e        = a new X25519 key for this one secret
 *   shared   = X25519(e, agent public key)
 *   key      = HKDF-SHA256(ikm shared, salt e.pub || agent.pub,
 *                          info "exfleet-seal-v1"), 32 bytes
 *   sealed   = AES-256-GCM(key, random 12-byte nonce,
 *                          associated data host_id NUL command_id)
 * SealedSecret carries e.pub, the nonce and ciphertext || 16-byte tag. The
 * collector stores only that. The sealing key's signature covers
 *   "exfleet-sealing-key-v1" NUL || host_id || NUL || public key
 * made like a command signature (SHA-256 ECDSA P-256, or pure Ed25519).
 *
 * Functions return 0 or a negative libuv error code. Every buffer that held
 * a private key, a shared secret, a derived key or a plaintext is wiped with
 * OPENSSL_cleanse before it is freed, on every path. */
#ifndef EXFLEET_SEAL_H
#define EXFLEET_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "exfleet.pb-c.h"
#include "sign.h"

#define SEAL_KEY_LEN 32 /* X25519 public key */
#define SEAL_NONCE_LEN 12
#define SEAL_TAG_LEN 16
#define SEAL_SECRET_MAX 1024 /* a password, with room to spare */

/* Loads the agent's sealing key from path (PEM PKCS#8), or creates it there
 * with mode 0600 when the file does not exist. Refuses a file that its group
 * or others may read, or that holds anything but an X25519 private key.
 * Free *key with EVP_PKEY_free. */
int seal_key_load_or_create(const char *path, EVP_PKEY **key, char *err, size_t errlen);

/* The raw public half of an X25519 key. */
int seal_key_public(EVP_PKEY *key, uint8_t out[SEAL_KEY_LEN]);

/* The agent signs its public sealing key with its certificate key (ECDSA
 * P-256 or Ed25519). *sig is a heap buffer for free(). */
int seal_key_sign(EVP_PKEY *cert_key, const char *host_id, const uint8_t pub[SEAL_KEY_LEN],
                  uint8_t **sig, size_t *sig_len, char *err, size_t errlen);

/* exfleetctl's check before it seals anything to pub: agent_cert (from the
 * collector, so untrusted) chains to the verifier's CA for client use, is
 * not revoked and is valid now (the reasons of sign_verifier_check_cert,
 * e.g. "agent certificate revoked"), has role agent ("signer 'alice' has
 * role operator, not agent"), names host_id ("agent certificate names
 * 'EXCH02', not 'EXCH01'"), and sig is its key's signature over host_id and
 * pub ("sealing key signature does not verify"). Hello.sealing_public_key
 * must be SEAL_KEY_LEN bytes before it is passed here. Returns 0, or
 * UV_EACCES (UV_ENOMEM) with the reason. */
int seal_key_verify(struct sign_verifier *v, X509 *agent_cert, const char *host_id,
                    const uint8_t pub[SEAL_KEY_LEN], const uint8_t *sig, size_t sig_len,
                    char *reason, size_t reasonlen);

/* Seals len (at most SEAL_SECRET_MAX) bytes of secret to the agent's public
 * key, for host_id and command_id. out is initialised and its byte fields
 * are heap buffers: release them with seal_secret_free (also after a
 * failure, which leaves them empty). */
int seal_secret(const uint8_t agent_pub[SEAL_KEY_LEN], const char *host_id, const char *command_id,
                const uint8_t *secret, size_t len, Exfleet__SealedSecret *out, char *err,
                size_t errlen);
/* Frees the fields seal_secret filled (not the struct) and empties them. */
void seal_secret_free(Exfleet__SealedSecret *s);

/* Opens a sealed secret with the agent's key, for host_id and command_id.
 * On success *secret is a heap buffer of *len bytes followed by a NUL (not
 * counted), to be released with seal_free_secret(*secret, *len). Anything
 * altered (ciphertext, tag, nonce, ephemeral key), or a secret sealed to
 * another key, host or command, returns UV_EACCES with the reason "sealed
 * secret does not open (tampered, or sealed to another host or command)";
 * wrong field sizes return UV_EINVAL ("sealed secret malformed: ..."). On
 * failure *secret is NULL and *len 0: no partial plaintext is ever returned. */
int seal_open(EVP_PKEY *agent_key, const char *host_id, const char *command_id,
              const Exfleet__SealedSecret *in, uint8_t **secret, size_t *len, char *reason,
              size_t reasonlen);
/* Wipes the len bytes (and the NUL after them) seal_open returned, then
 * frees them. NULL is allowed. */
void seal_free_secret(uint8_t *p, size_t len);

#endif
