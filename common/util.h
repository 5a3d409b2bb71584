/* Small helpers every program needs: time, files, hex. */
#ifndef EXFLEET_UTIL_H
#define EXFLEET_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Wall-clock time, Unix epoch, milliseconds. */
int64_t util_now_ms(void);

/* Formats a Unix time in ms as "2026-11-29T10:02:11Z" (buf of at least 21 bytes). */
void util_format_time(int64_t ms, char *buf, size_t len);

/* Reads a whole file of at most max bytes into a NUL-terminated heap buffer.
 * Returns 0, or a negative errno-style code with a message in err. */
int util_read_file(const char *path, size_t max, char **data, size_t *len, char *err,
		   size_t errlen);

/* Writes a file atomically: a temporary file beside it, flushed to disk, then
 * renamed over path. mode is applied at creation (0600 for secrets). */
int util_write_file_atomic(const char *path, const void *data, size_t len, int mode,
			   char *err, size_t errlen);

/* Refuses a private-key file that its group or others may read, naming the
 * file and the fix. Returns 0 when the file is private. */
int util_check_private_file(const char *path, char *err, size_t errlen);

/* What tells a file's versions apart when it is replaced in place or by a
 * rename: its size, modification time and inode. Zero it for "not seen". */
struct util_file_stamp {
	uint64_t size, inode;
	int64_t mtime_sec, mtime_nsec;
};
/* 1 when path's stamp is no longer *stamp (which then becomes path's), 0
 * when it is the same, negative when path cannot be read. */
int util_file_changed(const char *path, struct util_file_stamp *stamp);

/* Creates a directory and its parents; mode for the ones it creates. */
int util_mkdir_p(const char *path, int mode, char *err, size_t errlen);

/* Lower-case hex of len bytes into out (2*len+1 bytes). */
void util_hex(const uint8_t *in, size_t len, char *out);

/* Splits "host:port", "[v6]:port" into host and port (0 to 65535; 0 lets a
 * listener take any free port); 0 or UV_EINVAL. */
int util_split_hostport(const char *s, char *host, size_t host_len, char *port,
			size_t port_len);

/* A peer that vanishes must cost one connection, not the process: writes to
 * a closed socket return EPIPE instead of raising SIGPIPE. */
void util_ignore_sigpipe(void);

/* Gives freed heap memory back to the system where the C library allows it
 * (glibc keeps it otherwise): after a burst, an idle agent shrinks again. */
void util_trim_memory(void);

/* Raises the soft limit on open files to the hard limit (each agent session
 * is a socket); *soft_before and *hard receive the limits (0 where there is
 * no such limit). Returns the soft limit now in force. */
uint64_t util_raise_nofile(uint64_t *soft_before, uint64_t *hard);

#endif

