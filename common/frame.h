/* Framing: a 4-byte big-endian length, then that many bytes of payload.
 *
 * The reader is a plain buffer with no I/O so it can be fed by TLS, by tests
 * and by the fuzzer alike. It checks each length against its bounds before it
 * allocates for it, grows only to the frame in hand, and frees its buffer
 * whenever it is empty, so an idle session holds no frame memory. */
#ifndef EXFLEET_FRAME_H
#define EXFLEET_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER 4
#define FRAME_MAX_DEFAULT (1u << 20)

enum frame_error {
	FRAME_ERR_EMPTY = -1,    /* length 0 */
	FRAME_ERR_OVERSIZE = -2, /* length above max_frame */
	FRAME_ERR_NOMEM = -3,
};

struct frame_reader {
	uint8_t *buf;
	size_t cap;
	size_t start, end;  /* unconsumed bytes are buf[start, end) */
	size_t max_frame;
	uint32_t bad_length; /* the offending length after an error */
};

void frame_reader_init(struct frame_reader *fr, size_t max_frame);
void frame_reader_free(struct frame_reader *fr);

/* Space to read into: room for the rest of the frame in progress plus some
 * read-ahead. Call frame_reader_next until it returns 0 first; then at least
 * one byte is available. Returns 0 or a negative enum frame_error. */
int frame_reader_space(struct frame_reader *fr, uint8_t **space, size_t *avail);
/* Marks n bytes of that space as filled. */
void frame_reader_commit(struct frame_reader *fr, size_t n);
/* Copies bytes in (tests, fuzzing): as many as fit before whole frames must
 * be taken with frame_reader_next. Returns the count taken, or a negative
 * enum frame_error. */
long frame_reader_feed(struct frame_reader *fr, const uint8_t *data, size_t len);

/* The next whole frame: 1 and its payload (valid until the next call on the
 * reader), 0 when more bytes are needed, or a negative enum frame_error. */
int frame_reader_next(struct frame_reader *fr, const uint8_t **payload, size_t *len);

/* Bytes held that do not yet make a whole frame (non-zero at end of stream
 * means the stream was truncated). */
size_t frame_reader_pending(const struct frame_reader *fr);

const char *frame_strerror(int err);

/* Writes the header for a payload of len bytes. */
void frame_put_header(uint8_t out[FRAME_HEADER], uint32_t len);

#endif
