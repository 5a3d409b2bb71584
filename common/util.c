#include "util.h"

#include <errno.h>
#include <signal.h>
#ifndef _WIN32
#include <sys/resource.h>
#endif
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

/* Synchronous libuv file calls: the same code on Windows and Unix. */

int64_t util_now_ms(void)
{
	uv_timeval64_t tv;
	uv_gettimeofday(&tv);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

void util_format_time(int64_t ms, char *buf, size_t len)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
#ifdef _WIN32
	int ok = gmtime_s(&tm, &secs) == 0;
#else
	int ok = gmtime_r(&secs, &tm) != NULL;
#endif
	/* A time no calendar can show (a corrupt or hostile value) says so. */
	if (!ok || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld ms", (long long)ms);
}

int util_read_file(const char *path, size_t max, char **data, size_t *len, char *err,
		   size_t errlen)
{
	uv_fs_t req;
	int rc = uv_fs_open(NULL, &req, path, UV_FS_O_RDONLY, 0, NULL);
	uv_fs_req_cleanup(&req);
	if (rc < 0) {
		snprintf(err, errlen, "cannot read %s: %s", path, uv_strerror(rc));
		return rc;
	}
	uv_file fd = rc;
	char *buf = NULL;
	size_t used = 0, cap = 0;
	for (;;) {
		if (used == cap) {
			if (cap > max) {
				snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
				rc = UV_EFBIG;
				goto out;
			}
			cap = cap ? cap * 2 : 4096;
			if (cap > max + 1)
				cap = max + 1;
			char *grown = realloc(buf, cap + 1);
			if (!grown) {
				rc = UV_ENOMEM;
				snprintf(err, errlen, "%s: out of memory", path);
				goto out;
			}
			buf = grown;
		}
		uv_buf_t b = uv_buf_init(buf + used, (unsigned)(cap - used));
		rc = uv_fs_read(NULL, &req, fd, &b, 1, -1, NULL);
		uv_fs_req_cleanup(&req);
		if (rc < 0) {
			snprintf(err, errlen, "cannot read %s: %s", path, uv_strerror(rc));
			goto out;
		}
		if (rc == 0)
			break;
		used += (size_t)rc;
		if (used > max) {
			snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
			rc = UV_EFBIG;
			goto out;
		}
	}
	if (!buf) {
		buf = malloc(1);
		if (!buf) {
			rc = UV_ENOMEM;
			goto out;
		}
	}
	buf[used] = '\0';
	*data = buf;
	*len = used;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	uv_fs_close(NULL, &req, fd, NULL);
	uv_fs_req_cleanup(&req);
	return rc;
}

int util_write_file_atomic(const char *path, const void *data, size_t len, int mode,
			   char *err, size_t errlen)
{
	char tmp[4096];
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long", path);
		return UV_ENAMETOOLONG;
	}
	uv_fs_t req;
	int rc = uv_fs_open(NULL, &req, tmp, UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_TRUNC,
			    mode, NULL);
	uv_fs_req_cleanup(&req);
	if (rc < 0) {
		snprintf(err, errlen, "cannot create %s: %s", tmp, uv_strerror(rc));
		return rc;
	}
	uv_file fd = rc;
	const char *p = data;
	size_t left = len;
	while (left > 0) {
		uv_buf_t b = uv_buf_init((char *)p, (unsigned)(left > (1u << 30) ? (1u << 30) : left));
		rc = uv_fs_write(NULL, &req, fd, &b, 1, -1, NULL);
		uv_fs_req_cleanup(&req);
		if (rc < 0)
			break;
		p += rc;
		left -= (size_t)rc;
	}
	if (rc >= 0) {
		rc = uv_fs_fsync(NULL, &req, fd, NULL);
		uv_fs_req_cleanup(&req);
	}
	int crc = uv_fs_close(NULL, &req, fd, NULL);
	uv_fs_req_cleanup(&req);
	if (rc >= 0)
		rc = crc;
	if (rc >= 0) {
		rc = uv_fs_rename(NULL, &req, tmp, path, NULL);
		uv_fs_req_cleanup(&req);
	}
	if (rc < 0) {
		snprintf(err, errlen, "cannot write %s: %s", path, uv_strerror(rc));
		uv_fs_unlink(NULL, &req, tmp, NULL);
		uv_fs_req_cleanup(&req);
		return rc;
	}
	return 0;
}

int util_file_changed(const char *path, struct util_file_stamp *stamp)
{
	uv_fs_t req;
	int rc = uv_fs_stat(NULL, &req, path, NULL);
	if (rc < 0) {
		uv_fs_req_cleanup(&req);
		return rc;
	}
	struct util_file_stamp now = {req.statbuf.st_size, req.statbuf.st_ino,
				      req.statbuf.st_mtim.tv_sec, req.statbuf.st_mtim.tv_nsec};
	uv_fs_req_cleanup(&req);
	if (memcmp(&now, stamp, sizeof(now)) == 0)
		return 0;
	*stamp = now;
	return 1;
}

int util_check_private_file(const char *path, char *err, size_t errlen)
{
	uv_fs_t req;
	int rc = uv_fs_stat(NULL, &req, path, NULL);
	if (rc < 0) {
		uv_fs_req_cleanup(&req);
		snprintf(err, errlen, "cannot read %s: %s", path, uv_strerror(rc));
		return rc;
	}
	unsigned mode = (unsigned)req.statbuf.st_mode;
	uv_fs_req_cleanup(&req);
#ifndef _WIN32
	/* On Windows the key directory's ACL protects keys; see deploy/windows. */
	if (mode & 077) {
		snprintf(err, errlen,
			 "%s: private key is accessible by group or others (mode %04o); "
			 "run: chmod 600 %s",
			 path, mode & 07777, path);
		return UV_EPERM;
	}
#else
	(void)mode;
#endif
	return 0;
}

int util_mkdir_p(const char *path, int mode, char *err, size_t errlen)
{
	char buf[4096];
	if ((size_t)snprintf(buf, sizeof(buf), "%s", path) >= sizeof(buf)) {
		snprintf(err, errlen, "%s: path too long", path);
		return UV_ENAMETOOLONG;
	}
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\\' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		uv_fs_t req;
		int rc = uv_fs_mkdir(NULL, &req, buf, mode, NULL);
		uv_fs_req_cleanup(&req);
		if (rc < 0 && rc != UV_EEXIST) {
			snprintf(err, errlen, "cannot create directory %s: %s", buf, uv_strerror(rc));
			return rc;
		}
		*p = c;
		if (c == '\0')
			break;
	}
	return 0;
}

void util_hex(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

int util_split_hostport(const char *s, char *host, size_t host_len, char *port,
			size_t port_len)
{
	const char *colon;
	const char *h = s;
	size_t hlen;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return UV_EINVAL;
		h = s + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || strchr(s, ':') != colon)
			return UV_EINVAL;
		hlen = (size_t)(colon - s);
	}
	const char *p = colon + 1;
	size_t plen = strlen(p);
	if (hlen == 0 || hlen >= host_len || plen == 0 || plen >= port_len)
		return UV_EINVAL;
	for (const char *q = p; *q; q++)
		if (*q < '0' || *q > '9')
			return UV_EINVAL;
	long port_num = strtol(p, NULL, 10);
	if (port_num > 65535)
		return UV_EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	memcpy(port, p, plen + 1);
	return 0;
}

void util_ignore_sigpipe(void)
{
#ifndef _WIN32
	signal(SIGPIPE, SIG_IGN);
#endif
}

uint64_t util_raise_nofile(uint64_t *soft_before, uint64_t *hard)
{
#ifndef _WIN32
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		*soft_before = *hard = 0;
		return 0;
	}
	*soft_before = (uint64_t)rl.rlim_cur;
	*hard = (uint64_t)rl.rlim_max;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			return *soft_before;
	}
	return (uint64_t)rl.rlim_cur;
#else
	*soft_before = *hard = 0;
	return 0;
#endif
}

void util_trim_memory(void)
{
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}
