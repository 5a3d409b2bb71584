/* The frame reader fed arbitrary bytes in arbitrary chunks: it must never
 * read or write out of bounds, never hand out a frame longer than the limit,
 * and stop at the first bad length. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	/* First byte: the chunk size the stream is cut into. Second: the limit. */
	size_t chunk = (size_t)data[0] + 1;
	size_t max = ((size_t)data[1] + 1) * 64;
	data += 2;
	size -= 2;
	struct frame_reader fr;
	frame_reader_init(&fr, max);
	while (size > 0) {
		long n = frame_reader_feed(&fr, data, size < chunk ? size : chunk);
		if (n < 0)
			break;
		data += n;
		size -= (size_t)n;
		const uint8_t *payload;
		size_t len;
		int rc;
		while ((rc = frame_reader_next(&fr, &payload, &len)) == 1) {
			if (len == 0 || len > max)
				abort();
			volatile uint8_t sink = payload[0] ^ payload[len - 1];
			(void)sink;
		}
		if (rc < 0)
			break;
	}
	frame_reader_free(&fr);
	return 0;
}
