#!/bin/sh
# Prepares the Windows cross-build: the MinGW-w64 compiler and Wine from
# Debian, and static MinGW builds of libuv, OpenSSL, protobuf-c (runtime) and
# inih made from their Debian source packages, since Debian ships no MinGW
# builds of them. Safe to run again: what is installed, built and verified is
# left alone, so a second run takes a second and needs no network.
#
#   deploy/windows/deps.sh            install and build what is missing
#   deploy/windows/deps.sh --check    say what is missing, change nothing (exit 1 if any)
#   deploy/windows/deps.sh --prefix   print the directory of the built libraries
#
# Environment: EXFLEET_WIN_CACHE (default ~/.cache/exfleet-win) holds the
# sources, the builds and the result (EXFLEET_WIN_CACHE/prefix/{include,lib});
# JOBS (default: nproc) parallel compile jobs.
#
# The sources come through a private apt configuration under the cache: a
# deb-src entry for each deb entry of this machine's own apt sources, with the
# same URIs, suites, components and keys. Nothing under /etc/apt is changed.
# When the source of this machine's version of a package cannot be fetched
# (a mirror that serves a package's binaries but not its source), that one
# package comes from Debian's current stable release instead, through a
# second private configuration: the machine's main-archive entries (those of
# its release's own suite) with the suite replaced by "stable", the same URIs
# and keys, so apt verifies the signatures as usual. deps.sh says so, and
# the library's stamp (EXFLEET_WIN_CACHE/prefix/stamps) records which version
# was used and why.
set -eu

cache=${EXFLEET_WIN_CACHE:-${HOME:-/root}/.cache/exfleet-win}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
host=x86_64-w64-mingw32
# Bump when a recipe below changes, so cached builds are redone.
recipe=1

prefix=$cache/prefix
aptdir=$cache/apt
stable_aptdir=$cache/apt-stable
srcdir=$cache/src
builddir=$cache/build
logdir=$cache/log

toolchain_packages="gcc-mingw-w64-x86-64 wine64 wine"
# Source package : what it must define (symbols checked with nm).
libuv_symbols="uv_run uv_tcp_connect uv_async_send uv_fs_open uv_timer_start"
openssl_ssl_symbols="SSL_CTX_new SSL_do_handshake SSL_set_bio"
openssl_crypto_symbols="EVP_DigestSign OPENSSL_cleanse X509_verify_cert RAND_bytes"
protobufc_symbols="protobuf_c_message_pack protobuf_c_message_unpack protobuf_c_message_free_unpacked"
inih_symbols="ini_parse_stream ini_parse_string"

say() { echo "deps-win: $*"; }
die() {
	echo "deps-win: error: $*" >&2
	exit 1
}

check_only=0
case "${1:-}" in
--check) check_only=1 ;;
--prefix)
	echo "$prefix"
	exit 0
	;;
-h | --help)
	sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
"") ;;
*)
	echo "deps-win: unknown option '$1' (try --help)" >&2
	exit 2
	;;
esac

now() { date +%s; }

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		sudo "$@"
	else
		die "cannot run '$*' as $(id -un): run this as root or give this user sudo"
	fi
}

# ---- the toolchain ------------------------------------------------------

missing_packages() {
	m=""
	for p in $toolchain_packages; do
		installed "$p" || m="$m $p"
	done
	echo "$m"
}

install_toolchain() {
	missing=$(missing_packages)
	if [ -n "$missing" ]; then
		[ "$check_only" = 1 ] && {
			say "missing packages:$missing"
			return 1
		}
		t0=$(now)
		say "installing$missing (about 20 s)"
		export DEBIAN_FRONTEND=noninteractive
		as_root apt-get update -qq
		# shellcheck disable=SC2086
		as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
		say "installed$missing in $(($(now) - t0)) s"
	fi
	# wine64 alone gives no /usr/bin/wine: the wine package (and, on some
	# releases, its recommends) does.
	if ! command -v wine >/dev/null 2>&1; then
		[ "$check_only" = 1 ] && {
			say "no 'wine' command"
			return 1
		}
		say "no 'wine' command yet: installing wine with its recommends"
		as_root apt-get install -y -qq wine >/dev/null
		command -v wine >/dev/null 2>&1 || die "the wine package installed no 'wine' command"
	fi
	command -v $host-gcc >/dev/null 2>&1 || die "$host-gcc is missing after installing gcc-mingw-w64-x86-64"
	return 0
}

# Native tools the recipes use; deploy/deps.sh installs them with the rest.
check_native_tools() {
	for t in cmake make perl protoc-c dpkg-source tar; do
		command -v "$t" >/dev/null 2>&1 || die "'$t' is missing: run deploy/deps.sh first (make deps)"
	done
}

# ---- verification -------------------------------------------------------

# has_symbols LIB SYMBOL...: LIB is a MinGW (PE x86-64) archive defining each SYMBOL.
has_symbols() {
	lib=$1
	shift
	[ -s "$lib" ] || return 1
	$host-objdump -a "$lib" 2>/dev/null | grep -q "file format pe-x86-64" || return 1
	defined=$($host-nm -g --defined-only "$lib" 2>/dev/null | awk '{print $NF}')
	for s in "$@"; do
		echo "$defined" | grep -qx "$s" || return 1
	done
	return 0
}

# shellcheck disable=SC2086
verify_libuv() {
	[ -f "$prefix/include/uv.h" ] && [ -f "$prefix/include/uv/win.h" ] &&
		has_symbols "$prefix/lib/libuv.a" $libuv_symbols
}

# shellcheck disable=SC2086
verify_openssl() {
	[ -f "$prefix/include/openssl/ssl.h" ] && [ -f "$prefix/include/openssl/opensslv.h" ] &&
		[ -f "$prefix/include/openssl/configuration.h" ] &&
		has_symbols "$prefix/lib/libssl.a" $openssl_ssl_symbols &&
		has_symbols "$prefix/lib/libcrypto.a" $openssl_crypto_symbols
}

# shellcheck disable=SC2086
verify_protobufc() {
	[ -f "$prefix/include/protobuf-c/protobuf-c.h" ] &&
		has_symbols "$prefix/lib/libprotobuf-c.a" $protobufc_symbols
}

# shellcheck disable=SC2086
verify_inih() {
	[ -f "$prefix/include/ini.h" ] &&
		has_symbols "$prefix/lib/libinih.a" $inih_symbols
}

# A library is current when its stamp names this recipe, it was built from
# its own source (not a stand-in an earlier version of this script made), and
# it verifies.
stamp_ok() {
	stamp=$prefix/stamps/$1
	[ -f "$stamp" ] && grep -qx "recipe $recipe" "$stamp" && ! grep -q 'ini_fallback' "$stamp"
}

# write_stamp NAME ORIGIN [EXTRA LINE]
write_stamp() {
	mkdir -p "$prefix/stamps"
	printf 'recipe %s\nsource %s\nbuilt %s\n' "$recipe" "$2" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
		>"$prefix/stamps/$1"
	[ -z "${3:-}" ] || echo "$3" >>"$prefix/stamps/$1"
}

# ---- sources, through a private apt configuration -----------------------

# apt_private apt-get|apt-cache ARGS...: with the machine's own suites.
apt_private() {
	apt_in "$aptdir" "$@"
}

# apt_in APTDIR apt-get|apt-cache ARGS...: with the configuration in APTDIR.
apt_in() {
	adir=$1
	tool=$2
	shift 2
	set -- -o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$adir/sources.list.d" \
		-o "Dir::State::Lists=$adir/lists" -o "Dir::Cache=$adir/cache" "$@"
	# As root apt would hand downloads to the _apt user, who cannot write
	# into this user's cache directory.
	[ "$(id -u)" = 0 ] && set -- -o APT::Sandbox::User=root "$@"
	"$tool" "$@"
}

# install_sources APTDIR NAME: puts the NAME.sources.new and NAME.list.new files
# just written in place; when they changed, the lists fetched for the old
# ones are dropped.
install_sources() {
	changed=0
	for kind in sources list; do
		new=$1/sources.list.d/$2.$kind.new
		cur=$1/sources.list.d/$2.$kind
		if [ -s "$new" ]; then
			cmp -s "$new" "$cur" 2>/dev/null || changed=1
			mv "$new" "$cur"
		else
			rm -f "$new"
			[ -f "$cur" ] && changed=1 && rm -f "$cur"
		fi
	done
	[ "$changed" = 1 ] && rm -f "$1/lists/"*_Sources* 2>/dev/null
	return 0
}

# Writes a deb-src entry for every enabled deb entry of the machine's own
# sources (deb822 *.sources and one-line *.list / sources.list).
write_private_sources() {
	mkdir -p "$aptdir/sources.list.d" "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
	out=$aptdir/sources.list.d/exfleet-src.sources.new
	: >"$out"
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk '
			function flush() {
				if (n && deb && enabled) {
					print "Types: deb-src"
					for (i = 1; i <= n; i++) print lines[i]
					print ""
				}
				n = 0; deb = 0; enabled = 1; keep = 0
			}
			BEGIN { n = 0; deb = 0; enabled = 1 }
			/^#/ { next }
			/^[ \t]*$/ { flush(); next }
			/^[ \t]/ { if (keep) lines[++n] = $0; next }
			{
				field = tolower($1)
				keep = 1
				if (field == "types:") {
					for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1
					keep = 0
				} else if (field == "enabled:") {
					if (tolower($2) == "no") enabled = 0
					keep = 0
				}
				if (keep) lines[++n] = $0
			}
			END { flush() }
		' "$f" >>"$out"
	done
	list=$aptdir/sources.list.d/exfleet-src.list.new
	: >"$list"
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		sed -n 's/^[ \t]*deb\([ \t]\)/deb-src\1/p' "$f" >>"$list"
	done
	sort -u "$list" -o "$list"
	[ -s "$out" ] || [ -s "$list" ] ||
		die "no deb entries in /etc/apt/sources.list or /etc/apt/sources.list.d/: cannot derive a deb-src entry"
	install_sources "$aptdir" exfleet-src
}

lists_ready=0
update_private_lists() {
	[ "$lists_ready" = 1 ] && return 0
	write_private_sources
	update_lists "$aptdir" "the private deb-src entries"
	lists_ready=1
}

# update_lists APTDIR WHAT: apt-get update in APTDIR's configuration, unless
# its lists are fresh (under a day old). apt checks the Release signatures
# with the keyring each entry names (Signed-By), as for the machine's own.
update_lists() {
	if [ -z "$(find "$1/lists" -maxdepth 1 -name '*_Sources*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
		say "apt-get update (private source lists in $1)"
		apt_in "$1" apt-get update -qq >"$logdir/apt-update-$(basename "$1").log" 2>&1 || {
			tail -n 20 "$logdir/apt-update-$(basename "$1").log" >&2
			die "apt-get update with $2 failed (log: $logdir/apt-update-$(basename "$1").log)"
		}
		# apt-get update succeeds with a warning when an index or a
		# signature could not be had: without Sources, showsrc finds nothing.
		if grep -q '^[WE]:' "$logdir/apt-update-$(basename "$1").log"; then
			sed -n 's/^\([WE]:.*\)/  \1/p' "$logdir/apt-update-$(basename "$1").log" >&2
		fi
	fi
}

# This machine's release (its codename), whose suite the main-archive
# entries name.
release_codename() {
	codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null | tr -d '"')
	[ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release: cannot tell this machine's main-archive entries"
	echo "$codename"
}

# Writes a deb-src entry with the suite "stable" for every enabled deb entry
# of the machine's own sources that names its release's own suite (the
# main archive; not -updates, -security or other archives).
write_stable_sources() {
	codename=$(release_codename)
	mkdir -p "$stable_aptdir/sources.list.d" "$stable_aptdir/lists/partial" \
		"$stable_aptdir/cache/archives/partial"
	out=$stable_aptdir/sources.list.d/exfleet-stable-src.sources.new
	: >"$out"
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk -v codename="$codename" '
			function flush() {
				if (n && deb && enabled && main) {
					print "Types: deb-src"
					print "Suites: stable"
					for (i = 1; i <= n; i++) print lines[i]
					print ""
				}
				n = 0; deb = 0; enabled = 1; main = 0; keep = 0
			}
			BEGIN { n = 0; deb = 0; enabled = 1; main = 0 }
			/^#/ { next }
			/^[ \t]*$/ { flush(); next }
			/^[ \t]/ { if (keep) lines[++n] = $0; next }
			{
				field = tolower($1)
				keep = 1
				if (field == "types:") {
					for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1
					keep = 0
				} else if (field == "enabled:") {
					if (tolower($2) == "no") enabled = 0
					keep = 0
				} else if (field == "suites:") {
					for (i = 2; i <= NF; i++) if ($i == codename) main = 1
					keep = 0
				}
				if (keep) lines[++n] = $0
			}
			END { flush() }
		' "$f" >>"$out"
	done
	list=$stable_aptdir/sources.list.d/exfleet-stable-src.list.new
	: >"$list"
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		# deb [options] URI SUITE COMPONENT...
		awk -v codename="$codename" '
			$1 == "deb" {
				i = 2; opts = ""
				if ($2 ~ /^\[/) {
					while (i < NF && $i !~ /\]$/) opts = opts $(i++) " "
					opts = opts $(i++) " "
				}
				if ($(i + 1) != codename) next
				line = "deb-src " opts $i " stable"
				for (j = i + 2; j <= NF && $j !~ /^#/; j++) line = line " " $j
				print line
			}
		' "$f" >>"$list"
	done
	sort -u "$list" -o "$list"
	[ -s "$out" ] || [ -s "$list" ] ||
		die "no deb entry in this machine's apt sources names the suite '$codename': cannot derive an entry for Debian's stable release"
	install_sources "$stable_aptdir" exfleet-stable-src
}

stable_lists_ready=0
update_stable_lists() {
	[ "$stable_lists_ready" = 1 ] && return 0
	write_stable_sources
	update_lists "$stable_aptdir" "the deb-src entries for Debian's stable release"
	stable_lists_ready=1
}

# newest_version APTDIR PKG: the newest version of source package PKG there.
newest_version() {
	apt_in "$1" apt-cache showsrc --only-source "$2" 2>/dev/null |
		awk '/^Version:/ {print $2}' | sort -V | tail -n 1
}

# fetch_from APTDIR PKG VERSION: unpacks that source into $srcdir/PKG and
# sets src_tree; returns 1, with the reason in fetch_error, when it cannot
# be fetched.
fetch_from() {
	from=$1 fpkg=$2 fver=$3
	flog=$logdir/$fpkg-fetch.log
	fetch_error=""
	rm -rf "${srcdir:?}/$fpkg"
	mkdir -p "$srcdir/$fpkg"
	if ! (cd "$srcdir/$fpkg" && apt_in "$from" apt-get source -qq --only-source "$fpkg=$fver") \
		>>"$flog" 2>&1; then
		# Seen once for the newest openssl: the .dsc step fails. The
		# upstream tarball alone builds the same libraries.
		say "$fpkg $fver: apt-get source failed; trying the upstream tarball alone"
		rm -rf "${srcdir:?}/$fpkg"
		mkdir -p "$srcdir/$fpkg"
		# The mirror may lack the .dsc or the Debian tarball and still
		# have the upstream one: apt fails, and what it fetched is used.
		(cd "$srcdir/$fpkg" && apt_in "$from" apt-get source -qq --download-only \
			--only-source "$fpkg=$fver") >>"$flog" 2>&1 || true
		orig=""
		for f in "$srcdir/$fpkg"/*.orig.tar.*; do
			case "$f" in *.asc) ;; *) [ -f "$f" ] && orig=$f ;; esac
		done
		if [ -z "$orig" ]; then
			# "E: Failed to fetch URI  404  Not Found [IP: ...]": the
			# file and the server's answer.
			fetch_error=$(sed -n 's|^E: Failed to fetch [^ ]*/\([^/ ]*\)  *\([0-9][0-9]*  *[^[]*[^[ ]\).*|\1: \2|p' \
				"$flog" | tr -s ' ' | sort -u | paste -s -d ';' | sed 's/;/; /g')
			[ -n "$fetch_error" ] || fetch_error="apt-get source failed (log: $flog)"
			return 1
		fi
		(cd "$srcdir/$fpkg" && tar xf "$orig") || die "$fpkg: cannot unpack $orig"
	fi
	src_tree=$(find "$srcdir/$fpkg" -mindepth 1 -maxdepth 1 -type d | head -n 1)
	[ -n "$src_tree" ] || die "$fpkg: nothing unpacked in $srcdir/$fpkg"
}

# fetch_source PKG: unpacks the Debian source of this machine's version of
# PKG (the newest in its configured suites) into $srcdir/PKG; when that
# cannot be fetched, the version in Debian's current stable release. Sets
# src_tree, src_version and src_origin (what the stamp records).
fetch_source() {
	pkg=$1
	update_private_lists
	: >"$logdir/$pkg-fetch.log"
	src_version=$(newest_version "$aptdir" "$pkg")
	[ -n "$src_version" ] || die "no source package '$pkg' in the configured sources (see $aptdir/sources.list.d)"
	src_origin="$pkg $src_version"
	say "$pkg $src_version: fetching the Debian source"
	fetch_from "$aptdir" "$pkg" "$src_version" && return 0
	own_version=$src_version
	own_error=$fetch_error
	say "$pkg $own_version, this machine's version: its source cannot be fetched from this machine's package sources ($own_error)"
	say "$pkg: looking for it in Debian's current stable release instead (for $pkg only; the other libraries keep this machine's versions)"
	update_stable_lists
	src_version=$(newest_version "$stable_aptdir" "$pkg")
	if [ -z "$src_version" ]; then
		echo "deps-win: no source package '$pkg' in Debian's stable release either (see $stable_aptdir/sources.list.d; log: $logdir/apt-update-apt-stable.log)" >&2
		return 1
	fi
	say "$pkg $src_version (Debian stable): fetching the Debian source"
	if ! fetch_from "$stable_aptdir" "$pkg" "$src_version"; then
		echo "deps-win: the source of $pkg $src_version from Debian's stable release cannot be fetched either ($fetch_error; log: $logdir/$pkg-fetch.log)" >&2
		return 1
	fi
	src_origin="$pkg $src_version from Debian stable, since the source of this machine's $pkg $own_version cannot be fetched [$own_error]"
	say "$pkg: using $pkg $src_version from Debian stable, not this machine's $own_version, whose source cannot be fetched"
}

# run_logged LOG CMD...: runs CMD with output to LOG; on failure shows its end.
run_logged() {
	log=$1
	shift
	if ! "$@" >>"$log" 2>&1; then
		echo "deps-win: failed: $*" >&2
		tail -n 30 "$log" >&2
		die "see $log"
	fi
}

# ---- recipes ------------------------------------------------------------

build_libuv() {
	fetch_source libuv1 || die "libuv1: no source, no build"
	log=$logdir/libuv1-build.log
	: >"$log"
	b=$builddir/libuv1
	rm -rf "$b"
	say "libuv1: building uv_a with CMake (about 12 s)"
	run_logged "$log" cmake -S "$src_tree" -B "$b" -DCMAKE_SYSTEM_NAME=Windows \
		-DCMAKE_C_COMPILER=$host-gcc -DCMAKE_RC_COMPILER=$host-windres \
		-DCMAKE_BUILD_TYPE=Release -DLIBUV_BUILD_TESTS=OFF -DLIBUV_BUILD_BENCH=OFF
	run_logged "$log" cmake --build "$b" --target uv_a -j "$jobs"
	lib=$(find "$b" -name '*.a' | head -n 1)
	[ -n "$lib" ] || die "libuv1: the build made no static library (log: $log)"
	mkdir -p "$prefix/lib" "$prefix/include"
	cp "$lib" "$prefix/lib/libuv.a"
	cp -R "$src_tree/include/." "$prefix/include/"
	verify_libuv || die "libuv1: $prefix/lib/libuv.a lacks a symbol of: $libuv_symbols"
	write_stamp libuv "$src_origin"
}

build_openssl() {
	fetch_source openssl || die "openssl: no source, no build"
	log=$logdir/openssl-build.log
	: >"$log"
	b=$builddir/openssl
	rm -rf "$b"
	mkdir -p "$b"
	say "openssl: Configure mingw64 and make build_libs (about 90 s on 2 cores)"
	# Out of the source tree, so a rebuild starts clean.
	(cd "$b" && run_logged "$log" perl "$src_tree/Configure" mingw64 no-shared no-tests \
		--cross-compile-prefix=$host- --prefix=/exfleet-unused)
	run_logged "$log" make -C "$b" -j "$jobs" build_libs
	mkdir -p "$prefix/lib" "$prefix/include/openssl"
	# Headers: the fixed ones from the source, the generated ones from the build.
	cp "$src_tree"/include/openssl/*.h "$prefix/include/openssl/"
	cp "$b"/include/openssl/*.h "$prefix/include/openssl/"
	cp "$b/libssl.a" "$b/libcrypto.a" "$prefix/lib/"
	verify_openssl || die "openssl: libssl.a or libcrypto.a lacks a checked symbol, or a header is missing"
	write_stamp openssl "$src_origin"
}

build_protobufc() {
	fetch_source protobuf-c || die "protobuf-c: no source, no build"
	log=$logdir/protobuf-c-build.log
	: >"$log"
	b=$builddir/protobuf-c
	rm -rf "$b"
	mkdir -p "$b"
	say "protobuf-c: compiling the runtime (protobuf-c/protobuf-c.c)"
	run_logged "$log" $host-gcc -O2 -I"$src_tree" -c "$src_tree/protobuf-c/protobuf-c.c" -o "$b/protobuf-c.o"
	run_logged "$log" $host-ar rcs "$b/libprotobuf-c.a" "$b/protobuf-c.o"
	mkdir -p "$prefix/lib" "$prefix/include/protobuf-c"
	cp "$b/libprotobuf-c.a" "$prefix/lib/"
	cp "$src_tree/protobuf-c/protobuf-c.h" "$prefix/include/protobuf-c/"
	verify_protobufc || die "protobuf-c: libprotobuf-c.a lacks a symbol of: $protobufc_symbols"
	write_stamp protobuf-c "$src_origin"
}

build_inih() {
	log=$logdir/libinih-build.log
	: >"$log"
	b=$builddir/libinih
	rm -rf "$b"
	mkdir -p "$b" "$prefix/lib" "$prefix/include"
	# inih is a chosen library: without its source there is no Windows
	# build, rather than a parser of our own in its place.
	fetch_source libinih ||
		die "libinih: its Debian source package cannot be fetched, neither this machine's version nor Debian stable's; the Windows agent needs it"
	say "libinih: compiling ini.c"
	# inih's default options, which are the ones the header gives its
	# users. (Debian's own build adds INI_HANDLER_LINENO=1 to the library
	# only, so it calls a four-argument handler with five; the agent's
	# handler is the header's four-argument one, and so is this build's.)
	run_logged "$log" $host-gcc -O2 -c "$src_tree/ini.c" -o "$b/ini.o"
	cp "$src_tree/ini.h" "$prefix/include/"
	run_logged "$log" $host-ar rcs "$b/libinih.a" "$b/ini.o"
	cp "$b/libinih.a" "$prefix/lib/"
	verify_inih || die "libinih: libinih.a lacks a symbol of: $inih_symbols"
	write_stamp libinih "$src_origin"
}

# ensure NAME VERIFY BUILD
ensure() {
	name=$1 verify=$2 build=$3
	if stamp_ok "$name" && $verify; then
		say "$name: built and verified ($(sed -n 's/^source //p' "$prefix/stamps/$name"))"
		return 0
	fi
	if [ "$check_only" = 1 ]; then
		say "$name: not built (or fails verification)"
		return 1
	fi
	t0=$(now)
	$build
	say "$name: built and verified in $(($(now) - t0)) s"
}

# ---- main ---------------------------------------------------------------

t_start=$(now)
rc=0
if [ "$check_only" = 1 ]; then
	install_toolchain || rc=1
else
	install_toolchain
fi
if [ "$check_only" = 1 ] && ! command -v $host-gcc >/dev/null 2>&1; then
	say "cannot check the libraries without $host-gcc"
	exit 1
fi
if [ "$check_only" = 0 ]; then
	check_native_tools
	mkdir -p "$cache" "$logdir"
	# One run at a time per cache.
	if command -v flock >/dev/null 2>&1; then
		exec 9>"$cache/.lock"
		flock -w 1200 9 || die "another deps.sh holds $cache/.lock"
	fi
fi
for lib in libuv:verify_libuv:build_libuv protobuf-c:verify_protobufc:build_protobufc \
	openssl:verify_openssl:build_openssl libinih:verify_inih:build_inih; do
	name=${lib%%:*}
	rest=${lib#*:}
	verify=${rest%%:*}
	build=${rest#*:}
	if [ "$check_only" = 1 ]; then
		ensure "$name" "$verify" "$build" || rc=1
	else
		# Not in a || list: set -e must stay in force in the recipes.
		ensure "$name" "$verify" "$build"
	fi
done
[ "$check_only" = 1 ] && exit $rc
say "ready in $(($(now) - t_start)) s: $prefix/{include,lib}"
for stamp in "$prefix"/stamps/*; do
	if grep -q '^source .* from Debian stable' "$stamp"; then
		say "note: $(basename "$stamp") is $(sed -n 's/^source //p' "$stamp")"
	fi
done
exit 0
