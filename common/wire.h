/* The protocol's envelopes on a TLS connection: AgentMessage one way,
 * CollectorMessage the other (proto/exfleet.proto). */
#ifndef EXFLEET_WIRE_H
#define EXFLEET_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "exfleet.pb-c.h"
#include "tls.h"

#define WIRE_PROTOCOL_VERSION 1

/* Encodes m and queues it as one frame. Returns 0 or negative (see
 * tls_conn_send). */
int wire_send_agent(struct tls_conn *c, const Exfleet__AgentMessage *m);
int wire_send_collector(struct tls_conn *c, const Exfleet__CollectorMessage *m);

/* Encodes m into a new buffer that starts with FRAME_HEADER bytes of room for
 * the frame header; *len is the payload length. NULL when out of memory. */
uint8_t *wire_pack_agent(const Exfleet__AgentMessage *m, size_t *len);
uint8_t *wire_pack_collector(const Exfleet__CollectorMessage *m, size_t *len);

/* Decodes one payload. NULL with the reason in why when it is not a valid
 * envelope: undecodable, or no message in it. Free with the _free_unpacked
 * functions protoc-c generates. */
Exfleet__AgentMessage *wire_decode_agent(const uint8_t *payload, size_t len, char *why,
					 size_t whylen);
Exfleet__CollectorMessage *wire_decode_collector(const uint8_t *payload, size_t len, char *why,
						 size_t whylen);

/* "Hello", "Snapshot", ... for log lines. */
const char *wire_agent_kind(const Exfleet__AgentMessage *m);
const char *wire_collector_kind(const Exfleet__CollectorMessage *m);

#endif
