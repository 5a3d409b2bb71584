#include "frame.h"

#include <stdlib.h>
#include <string.h>

/* Read-ahead beyond the frame in progress, so small frames arriving together
 * are taken in one read. */
#define FRAME_READ_AHEAD 16384

void frame_reader_init(struct frame_reader *fr, size_t max_frame)
{
	memset(fr, 0, sizeof(*fr));
	fr->max_frame = max_frame ? max_frame : FRAME_MAX_DEFAULT;
}

void frame_reader_free(struct frame_reader *fr)
{
	free(fr->buf);
	fr->buf = NULL;
	fr->cap = fr->start = fr->end = 0;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void frame_put_header(uint8_t out[FRAME_HEADER], uint32_t len)
{
	out[0] = (uint8_t)(len >> 24);
	out[1] = (uint8_t)(len >> 16);
	out[2] = (uint8_t)(len >> 8);
	out[3] = (uint8_t)len;
}

size_t frame_reader_pending(const struct frame_reader *fr)
{
	return fr->end - fr->start;
}

/* Checks the length of the frame at start, if its header is in. */
static int check_length(struct frame_reader *fr, size_t *need)
{
	size_t have = fr->end - fr->start;
	if (have < FRAME_HEADER) {
		*need = FRAME_HEADER;
		return 0;
	}
	uint32_t len = get_be32(fr->buf + fr->start);
	if (len == 0 || len > fr->max_frame) {
		fr->bad_length = len;
		return len == 0 ? FRAME_ERR_EMPTY : FRAME_ERR_OVERSIZE;
	}
	*need = FRAME_HEADER + (size_t)len;
	return 0;
}

int frame_reader_space(struct frame_reader *fr, uint8_t **space, size_t *avail)
{
	size_t need;
	int rc = check_length(fr, &need);
	if (rc < 0)
		return rc;

	size_t have = fr->end - fr->start;
	if (fr->start > 0 && (fr->start + need > fr->cap || have == 0)) {
		memmove(fr->buf, fr->buf + fr->start, have);
		fr->start = 0;
		fr->end = have;
	}
	/* Room for the frame in progress, plus read-ahead for small frames,
	 * but never more than one maximal frame and its header. */
	size_t want = need + (need < FRAME_READ_AHEAD ? FRAME_READ_AHEAD - need : 0);
	if (want > fr->max_frame + FRAME_HEADER)
		want = fr->max_frame + FRAME_HEADER;
	if (want < need)
		want = need;
	if (fr->cap < want) {
		uint8_t *grown = realloc(fr->buf, want);
		if (!grown)
			return FRAME_ERR_NOMEM;
		fr->buf = grown;
		fr->cap = want;
	}
	*space = fr->buf + fr->end;
	*avail = fr->cap - fr->end;
	return 0;
}

void frame_reader_commit(struct frame_reader *fr, size_t n)
{
	fr->end += n;
}

long frame_reader_feed(struct frame_reader *fr, const uint8_t *data, size_t len)
{
	size_t taken = 0;
	while (taken < len) {
		uint8_t *space;
		size_t avail;
		int rc = frame_reader_space(fr, &space, &avail);
		if (rc < 0)
			return rc;
		if (avail == 0)
			break; /* full of whole frames */
		size_t n = len - taken < avail ? len - taken : avail;
		memcpy(space, data + taken, n);
		frame_reader_commit(fr, n);
		taken += n;
	}
	return (long)taken;
}

int frame_reader_next(struct frame_reader *fr, const uint8_t **payload, size_t *len)
{
	if (fr->start == fr->end && fr->buf) {
		/* Everything handed out has been consumed: give the memory back. */
		frame_reader_free(fr);
		return 0;
	}
	size_t need;
	int rc = check_length(fr, &need);
	if (rc < 0)
		return rc;
	if (fr->end - fr->start < need)
		return 0;
	*payload = fr->buf + fr->start + FRAME_HEADER;
	*len = need - FRAME_HEADER;
	fr->start += need;
	return 1;
}

const char *frame_strerror(int err)
{
	switch (err) {
	case FRAME_ERR_EMPTY:
		return "frame of length 0";
	case FRAME_ERR_OVERSIZE:
		return "frame larger than the maximum";
	case FRAME_ERR_NOMEM:
		return "out of memory";
	default:
		return "unknown frame error";
	}
}
