/* Configuration files: INI text read by inih, checked against a table of keys
 * that gives each key's section, type, default and limits, and stored into the
 * caller's struct. Every error a person reads names the file, the line, the
 * section and the key.
 *
 * The file:
 *   [section]            names are case-sensitive; exfleet's are lower-case
 *   key = value          "key: value" also works; surrounding blanks are dropped
 *   ; comment            also "# comment", and " ; comment" after a value
 * Leading blanks are ignored, so keys may be indented; there are no
 * continuation lines. Values are not unquoted. A UTF-8 BOM and CRLF line ends
 * are accepted. A line holds at most what inih's line buffer allows
 * (INI_MAX_LINE, 200 bytes by default: 198 characters). Each key may be set
 * once; an unknown section or key is an error. A section with no keys is not
 * checked, as it sets nothing. */
#ifndef EXFLEET_CONFIG_H
#define EXFLEET_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* What a value means, and what the field at the key's offset must be:
 *   CONFIG_STRING    char *, on the heap; NULL when unset
 *   CONFIG_PATH      char *, like STRING; a relative path is joined to the
 *                    directory of the config file
 *   CONFIG_INT       int64_t, decimal with an optional sign
 *   CONFIG_BOOL      bool: true/false, yes/no, on/off, 1/0, in any case
 *   CONFIG_SIZE      uint64_t bytes: 4096, 64K or 64KiB, 64M or 64MiB,
 *                    1G or 1GiB, 1T or 1TiB (K = 1024)
 *   CONFIG_DURATION  uint64_t milliseconds: 500ms, 10s, 5m, 1h, 2d;
 *                    a bare number is seconds
 *   CONFIG_LIST      struct config_list: comma-separated items, blanks around
 *                    each trimmed, empty items refused
 *   CONFIG_ENUM      int: index of the value in choices (exact match)
 * An empty value ("key =") unsets a STRING, PATH or LIST key, its default too;
 * for the other types it is an error. */
enum config_type {
	CONFIG_STRING,
	CONFIG_PATH,
	CONFIG_INT,
	CONFIG_BOOL,
	CONFIG_SIZE,
	CONFIG_DURATION,
	CONFIG_LIST,
	CONFIG_ENUM,
};

/* The key has no default and must be set to a non-empty value. */
#define CONFIG_REQUIRED 0x1
/* A PATH to a private key: it must be readable, and not by group or others
 * (util_check_private_file). */
#define CONFIG_PRIVATE_KEY 0x2
/* A PATH that must name a readable file (certificate, CA, CRL). */
#define CONFIG_MUST_EXIST 0x4

struct config_list {
	char **items;
	size_t count;
};

struct config_key {
	const char *section;        /* "agent", "tls", ... */
	const char *name;
	enum config_type type;
	size_t offset;              /* offsetof() the field in the caller's struct */
	unsigned flags;             /* CONFIG_REQUIRED, ... */
	const char *default_value;  /* text, parsed like a value in the file; NULL: unset */
	int64_t min, max;           /* INT, SIZE, DURATION bounds, inclusive; both 0: none */
	const char *const *choices; /* ENUM: names, NULL-terminated */
	const char *help;           /* one line for config_print_reference */
};

struct config_error {
	char msg[512];
};

/* Fills target from the INI file at path: defaults first, then the file's
 * values, then the checks (required keys, files that must exist or be
 * private). Stops at the first error. Returns 0, or a negative libuv error
 * code with a message in err (err may be NULL): UV_EINVAL for bad content;
 * the error from opening the config file or a file a key names (UV_ENOENT,
 * UV_EACCES, UV_EISDIR); UV_EPERM for a private key others may read;
 * UV_ENOMEM.
 *
 * Either way the caller calls config_free afterwards. Every field the table
 * names is set to empty before anything can fail, so that is always safe; it
 * also means a struct being reused must be freed before it is loaded again.
 * Messages use path as given. */
int config_load(const char *path, const struct config_key *keys, size_t nkeys, void *target,
		struct config_error *err);

/* As config_load, for text already in memory. name stands for the file in
 * messages; relative PATH values are joined to base_dir, or left relative
 * when it is NULL. */
int config_load_string(const char *text, const char *name, const char *base_dir,
		       const struct config_key *keys, size_t nkeys, void *target,
		       struct config_error *err);

/* Frees the STRING, PATH and LIST fields and leaves them unset. */
void config_free(const struct config_key *keys, size_t nkeys, void *target);

/* Writes a sample file documenting every key: its section, help, type,
 * limits and default, with each key line commented out. */
void config_print_reference(FILE *out, const struct config_key *keys, size_t nkeys);

#endif
