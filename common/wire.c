#include "wire.h"

#include <stdio.h>
#include <stdlib.h>

#include "frame.h"

/* Small messages (heartbeats, acks) are encoded on the stack. */
#define WIRE_STACK_BYTES 2048

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(FRAME_HEADER + (n ? n : 1));
	if (!buf)
		return NULL;
	*len = protobuf_c_message_pack(m, buf + FRAME_HEADER);
	return buf;
}

static int send_message(struct tls_conn *c, const ProtobufCMessage *m)
{
	uint8_t stack[FRAME_HEADER + WIRE_STACK_BYTES];
	size_t n = protobuf_c_message_get_packed_size(m);
	if (n <= WIRE_STACK_BYTES) {
		protobuf_c_message_pack(m, stack + FRAME_HEADER);
		return tls_conn_send(c, stack, n);
	}
	size_t len;
	uint8_t *buf = pack(m, &len);
	if (!buf)
		return -1;
	int rc = tls_conn_send(c, buf, len);
	free(buf);
	return rc;
}

static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *d, const uint8_t *payload,
				size_t len, char *why, size_t whylen)
{
	ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, payload);
	if (!m)
		snprintf(why, whylen, "undecodable %s (%zu bytes)", d->short_name, len);
	return m;
}

uint8_t *wire_pack_agent(const Exfleet__AgentMessage *m, size_t *len)
{
	return pack(&m->base, len);
}

uint8_t *wire_pack_collector(const Exfleet__CollectorMessage *m, size_t *len)
{
	return pack(&m->base, len);
}

int wire_send_agent(struct tls_conn *c, const Exfleet__AgentMessage *m)
{
	return send_message(c, &m->base);
}

int wire_send_collector(struct tls_conn *c, const Exfleet__CollectorMessage *m)
{
	return send_message(c, &m->base);
}

/* A peer sends only the kinds that the protocol version agreed in
 * Hello/Welcome has, so an envelope with no message in it is an error. */

Exfleet__AgentMessage *wire_decode_agent(const uint8_t *payload, size_t len, char *why,
					 size_t whylen)
{
	Exfleet__AgentMessage *m = (Exfleet__AgentMessage *)decode(
		&exfleet__agent_message__descriptor, payload, len, why, whylen);
	if (m && m->msg_case == EXFLEET__AGENT_MESSAGE__MSG__NOT_SET) {
		snprintf(why, whylen, "AgentMessage with no message in it (%zu bytes)", len);
		exfleet__agent_message__free_unpacked(m, NULL);
		return NULL;
	}
	return m;
}

Exfleet__CollectorMessage *wire_decode_collector(const uint8_t *payload, size_t len, char *why,
						 size_t whylen)
{
	Exfleet__CollectorMessage *m = (Exfleet__CollectorMessage *)decode(
		&exfleet__collector_message__descriptor, payload, len, why, whylen);
	if (m && m->msg_case == EXFLEET__COLLECTOR_MESSAGE__MSG__NOT_SET) {
		snprintf(why, whylen, "CollectorMessage with no message in it (%zu bytes)", len);
		exfleet__collector_message__free_unpacked(m, NULL);
		return NULL;
	}
	return m;
}

const char *wire_agent_kind(const Exfleet__AgentMessage *m)
{
	switch (m->msg_case) {
	case EXFLEET__AGENT_MESSAGE__MSG_HELLO:
		return "Hello";
	case EXFLEET__AGENT_MESSAGE__MSG_SNAPSHOT:
		return "Snapshot";
	case EXFLEET__AGENT_MESSAGE__MSG_EVENTS:
		return "EventBatch";
	case EXFLEET__AGENT_MESSAGE__MSG_HEARTBEAT:
		return "Heartbeat";
	case EXFLEET__AGENT_MESSAGE__MSG_COMMAND_RESULT:
		return "CommandResult";
	default:
		return "unknown";
	}
}

const char *wire_collector_kind(const Exfleet__CollectorMessage *m)
{
	switch (m->msg_case) {
	case EXFLEET__COLLECTOR_MESSAGE__MSG_WELCOME:
		return "Welcome";
	case EXFLEET__COLLECTOR_MESSAGE__MSG_ACK:
		return "Ack";
	case EXFLEET__COLLECTOR_MESSAGE__MSG_COMMAND:
		return "Command";
	case EXFLEET__COLLECTOR_MESSAGE__MSG_HEARTBEAT:
		return "Heartbeat";
	default:
		return "unknown";
	}
}
