#!/bin/sh
# SPDX-License-Identifier: MIT
# make install into a staging DESTDIR, then use that copy the way a user of
# an installed pairmesh would: examples compiled with nothing but
# `pkg-config --cflags --libs pairmesh`, run against the installed shared
# library, man pages found by name. make uninstall leaves nothing behind.
. "$(dirname "$0")/lib/sh.sh"

# The make that runs this test must not leak its jobserver into ours.
unset MAKEFLAGS MFLAGS MAKELEVEL
MK="make --no-print-directory -s BUILD=$BUILD SAN=$SAN"
R=$T/root
P=$R/usr

if $MK install DESTDIR="$R" PREFIX=/usr >"$T/install.log" 2>&1; then
	ok "make install DESTDIR=... PREFIX=/usr"
else
	fail "make install"
	cat "$T/install.log"
	finish
fi

# What lands where.
for f in bin/pairmesh include/pairmesh.h lib/libpairmesh.a \
	 lib/libpairmesh.so.1.0.0 lib/pkgconfig/pairmesh.pc \
	 share/man/man1/pairmesh.1 share/man/man3/pairmesh.3 \
	 share/man/man3/pm_reserve.3 share/man/man7/pairmesh-protocol.7; do
	[ -f "$P/$f" ] || fail "not installed: /usr/$f"
done
if [ "$(readlink "$P/lib/libpairmesh.so.1")" = libpairmesh.so.1.0.0 ] &&
   [ "$(readlink "$P/lib/libpairmesh.so")" = libpairmesh.so.1 ]; then
	ok "libpairmesh.so -> libpairmesh.so.1 -> libpairmesh.so.1.0.0"
else
	fail "shared library links"
	ls -l "$P/lib"
fi
soname=$(readelf -d "$P/lib/libpairmesh.so.1.0.0" |
	 sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libpairmesh.so.1 ] && ok "soname $soname" ||
	fail "soname is '$soname'"

# The dynamic symbol table holds the header's functions, nothing else.
sed -n 's/^[a-z][a-z0-9_ ]*[ *]\(pm_[a-z0-9_]*\)(.*/\1/p' \
	include/pairmesh.h | sort >"$T/api"
nm -D --defined-only "$P/lib/libpairmesh.so.1.0.0" |
	awk '$2 ~ /^[TtWiDdBbRrVv]$/ { sub(/@.*/, "", $3); print $3 }' |
	grep -v '^PAIRMESH_' | sort >"$T/exported"
if cmp -s "$T/api" "$T/exported"; then
	ok "exports exactly the $(wc -l <"$T/api") functions of pairmesh.h"
else
	fail "exported symbols differ from the API (< API, > exported)"
	diff "$T/api" "$T/exported"
fi

"$P/bin/pairmesh" --version | grep -q '^pairmesh [0-9]' &&
	ok "installed pairmesh --version runs" || fail "installed CLI"

# pkg-config, pointed at the staged tree only.
export PKG_CONFIG_PATH="$P/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$R"
flags=$(pkg-config --cflags --libs pairmesh) || fail "pkg-config pairmesh"
ver=$(pkg-config --modversion pairmesh)
want=$(sed -n 's/^#define PM_VERSION_MAJOR[ \t]*//p' include/pairmesh.h).$(
       sed -n 's/^#define PM_VERSION_MINOR[ \t]*//p' include/pairmesh.h)
[ "$ver" = "$want" ] && ok "pkg-config --modversion: $ver" ||
	fail "pkg-config version '$ver', header says '$want'"
case "$flags" in
*"-I$P/include"*"-L$P/lib"*-lpairmesh*) ok "pkg-config: $flags" ;;
*) fail "pkg-config flags: $flags" ;;
esac

# Compile outside the source tree: no -Iinclude, no build/ directory.
mkdir -p "$T/ex"
cp examples/*.c examples/*.h "$T/ex/"
for ex in echo tour chat; do
	# shellcheck disable=SC2086
	if (cd "$T/ex" && cc $SANFLAGS -o "$ex" "$ex.c" $flags) \
	   >"$T/cc_$ex" 2>&1; then
		ok "$ex.c builds with pkg-config --cflags --libs pairmesh"
	else
		fail "$ex.c does not build against the installed copy"
		cat "$T/cc_$ex"
	fi
done
# The file transfer also hashes with libsodium: one more package name.
for ex in file_send file_recv; do
	# shellcheck disable=SC2086
	(cd "$T/ex" && cc $SANFLAGS -o "$ex" "$ex.c" \
	 $(pkg-config --cflags --libs pairmesh libsodium)) >"$T/cc_$ex" 2>&1 ||
		{ fail "$ex.c build"; cat "$T/cc_$ex"; }
done

# They run against the installed shared library, found by the loader.
export LD_LIBRARY_PATH="$P/lib"
if ldd "$T/ex/tour" | grep -q "libpairmesh.so.1 => $P/lib/"; then
	ok "examples load $P/lib/libpairmesh.so.1"
else
	fail "examples do not load the installed library"
	ldd "$T/ex/tour"
fi
tp=$(free_port)
start t1 "$T/ex/tour" "127.0.0.1:$tp"
wait_listen "$tp" || fail "tour did not listen"
start t2 "$T/ex/tour" 127.0.0.1:0 "127.0.0.1:$tp"
if wait_for "$T/t1.out" '^[0-9a-f]{16}: hello$'; then
	ok "installed-copy tour: hello arrived"
else
	fail "installed-copy tour"
	show t1; show t2
fi
start echo "$T/ex/echo"
ready echo
spawn cli "$P/bin/pairmesh" node --connect "$echo_addr"
ready cli
feed cli "$echo_id via the installed library"
if wait_for "$T/cli.out" "^$echo_id via the installed library\$"; then
	ok "installed echo answers the installed CLI"
else
	fail "installed echo"
	show echo; show cli
fi
close_in cli
wait_exit cli
head -c 3000000 /dev/urandom >"$T/f"
start recv "$T/ex/file_recv" 127.0.0.1:0 "$T/f.got"
ready recv
start send "$T/ex/file_send" "$T/f" "$recv_addr"
wait_exit send
wait_exit recv
if [ "$status" -eq 0 ] && cmp -s "$T/f" "$T/f.got"; then
	ok "installed file_send -> file_recv: 3 MB arrived whole"
else
	fail "installed file transfer"
	show send; show recv
fi
unset LD_LIBRARY_PATH

# Static library: the same program, with --static's private requirements.
# shellcheck disable=SC2046
if (cd "$T/ex" && cc $SANFLAGS -o tour_static tour.c \
    $(pkg-config --cflags pairmesh) "$P/lib/libpairmesh.a" \
    $(pkg-config --static --libs-only-l pairmesh | sed 's/-lpairmesh//')) \
    >"$T/cc_static" 2>&1 && ! ldd "$T/ex/tour_static" | grep -q pairmesh
then
	ok "tour links statically against libpairmesh.a (--static deps)"
else
	fail "static link"
	cat "$T/cc_static"
fi

# Man pages by name, through the installed tree (mandoc follows .so).
n=0
for pg in man1/pairmesh.1 man3/pairmesh.3 man3/pm_send_to.3 \
	  man7/pairmesh-protocol.7; do
	(cd "$P/share/man" && mandoc -T ascii "$pg") 2>/dev/null |
		grep -q 'pm_reserve\|pairmesh' || {
		fail "installed $pg does not render"; n=1; }
done
[ "$n" -eq 0 ] && ok "installed man pages render (pm_send_to(3) via .so)"

# Other directories: PREFIX and LIBDIR honoured, pairmesh.pc follows.
R2=$T/root2
$MK install DESTDIR="$R2" PREFIX=/opt/pm LIBDIR=/opt/pm/lib64 \
	MANDIR=/opt/pm/man >/dev/null 2>&1
if [ -f "$R2/opt/pm/lib64/libpairmesh.so.1.0.0" ] &&
   [ -f "$R2/opt/pm/man/man3/pairmesh.3" ] &&
   grep -qx 'libdir=${prefix}/lib64' "$R2/opt/pm/lib64/pkgconfig/pairmesh.pc" &&
   grep -qx 'prefix=/opt/pm' "$R2/opt/pm/lib64/pkgconfig/pairmesh.pc"; then
	ok "PREFIX=/opt/pm LIBDIR=.../lib64 MANDIR=... honoured"
else
	fail "PREFIX/LIBDIR/MANDIR"
	find "$R2"
fi

# make uninstall removes every file it installed (directories may stay).
$MK uninstall DESTDIR="$R" PREFIX=/usr >/dev/null 2>&1
$MK uninstall DESTDIR="$R2" PREFIX=/opt/pm LIBDIR=/opt/pm/lib64 \
	MANDIR=/opt/pm/man >/dev/null 2>&1
left=$(find "$R" "$R2" ! -type d)
if [ -z "$left" ]; then
	ok "make uninstall leaves no file"
else
	fail "left after uninstall: $left"
fi
finish
