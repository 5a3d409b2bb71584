#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>

#include <openssl/pem.h>
#include <uv.h>

#include "util.h"

int test_tmpdir(const char *name, char *out, size_t len)
{
	const char *base = getenv("EXFLEET_TEST_TMP");
	char err[256], template[1024];
	if (!base || !*base)
		base = "/tmp";
	if (util_mkdir_p(base, 0700, err, sizeof(err)) < 0)
		return UV_EIO;
	snprintf(template, sizeof(template), "%s/%s-XXXXXX", base, name);
	uv_fs_t req;
	int rc = uv_fs_mkdtemp(NULL, &req, template, NULL);
	if (rc == 0)
		snprintf(out, len, "%s", req.path);
	uv_fs_req_cleanup(&req);
	return rc;
}

void test_rmtree(const char *path)
{
	uv_fs_t req;
	uv_dirent_t entry;
	if (uv_fs_scandir(NULL, &req, path, 0, NULL) >= 0) {
		while (uv_fs_scandir_next(&req, &entry) != UV_EOF) {
			char child[2048];
			snprintf(child, sizeof(child), "%s/%s", path, entry.name);
			if (entry.type == UV_DIRENT_DIR) {
				test_rmtree(child);
			} else {
				uv_fs_t unlink_req;
				uv_fs_unlink(NULL, &unlink_req, child, NULL);
				uv_fs_req_cleanup(&unlink_req);
			}
		}
	}
	uv_fs_req_cleanup(&req);
	uv_fs_rmdir(NULL, &req, path, NULL);
	uv_fs_req_cleanup(&req);
}

X509 *test_read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *cert = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	return cert;
}

EVP_PKEY *test_read_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	return key;
}
