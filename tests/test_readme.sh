#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the shell blocks (```sh) of README.md as written, so the README
# stays true. Each block runs as one `sh -e` script, in its own process
# group, from a scratch directory that mirrors the source tree (build/ is
# $BUILD); HOME is a scratch directory too, so `make install
# PREFIX=$HOME/.local` installs there. Port 7000 becomes a free port, so that
# parallel runs cannot collide. `make test` is not run: it is what runs
# this. Then the tour's C program must be examples/tour.c verbatim, and
# every ```c block must compile against include/pairmesh.h.
. "$(dirname "$0")/lib/sh.sh"

unset MAKEFLAGS MFLAGS MAKELEVEL
ROOT=$(pwd)
S=$T/src
mkdir -p "$S" "$T/home" "$T/bin"
for f in Makefile include src tools tests examples docs bench; do
	ln -s "$ROOT/$f" "$S/$f"
done
case "$BUILD" in
/*) ln -s "$BUILD" "$S/build" ;;
*) ln -s "$ROOT/$BUILD" "$S/build" ;;
esac
# Under SAN=1 the library is sanitized: the README's `cc` needs the flags.
if [ -n "$SANFLAGS" ]; then
	real_cc=$(command -v cc)
	printf '#!/bin/sh\nexec %s %s "$@"\n' "$real_cc" "$SANFLAGS" \
		>"$T/bin/cc"
	chmod +x "$T/bin/cc"
fi
PORT=$(free_port)

awk -v dir="$T" '
/^```sh$/ { n++; f = dir "/block." n; printf "" > f; inb = 1; next }
/^```/ { inb = 0; next }
inb { print > f }' README.md
nblocks=$(ls "$T"/block.* 2>/dev/null | wc -l)
[ "$nblocks" -ge 4 ] || fail "README.md: only $nblocks shell blocks"

# Drops "make test" (this run) and commands an earlier block already ran;
# moves port 7000.
: >"$T/seen"
i=1
while [ "$i" -le "$nblocks" ]; do
	b=$T/block.$i
	: >"$b.run"
	while IFS= read -r l; do
		cmd=$(printf '%s\n' "$l" | sed 's/[ \t]*#.*$//')
		case "$cmd" in
		"make test") echo "# not run here: make test is this run"
			     continue ;;
		esac
		if [ -n "$cmd" ] && grep -qxF -- "$cmd" "$T/seen"; then
			continue
		fi
		printf '%s\n' "$cmd" >>"$T/seen"
		printf '%s\n' "$l" | sed "s/127\.0\.0\.1:7000/127.0.0.1:$PORT/g" \
			>>"$b.run"
	done <"$b"
	i=$((i + 1))
done

# run_block N: starts block N in a process group of its own.
run_block()
{
	(cd "$S" && HOME=$T/home PATH=$T/bin:$PATH \
		setsid sh -ec ". '$T/block.$1.run'") \
		>"$T/block$1.out" 2>"$T/block$1.err" &
	eval "block$1_pid=$!"
	PIDS="$PIDS $!"
}

check_exit()
{
	if wait_exit "block$1" && [ "$status" -eq 0 ]; then
		ok "README block $1 ran: $(grep -v '^ *$' "$T/block.$1.run" |
			tr '\n' ';' | cut -c1-60)"
	else
		fail "README block $1 exited $status"
		show "block$1"
		cat "$T/block.$1.run"
	fi
}

i=1
while [ "$i" -le "$nblocks" ]; do
	if ! grep -q '[^ ]' "$T/block.$i.run"; then
		i=$((i + 1))
		continue
	fi
	run_block $i
	if grep -q '^\./tour ' "$T/block.$i.run"; then
		# The tour node runs until stopped: done once its hello is in
		# the inbox of the netcat block's node.
		if wait_for "$S/inbox" '^[0-9a-f]{16} hello$' 2; then
			ok "README block $i: installed, built with pkg-config, said hello"
		else
			fail "README block $i: no hello from ./tour"
			show "block$i"
			cat "$S/inbox"
		fi
		[ -x "$T/home/.local/bin/pairmesh" ] ||
			fail 'make install PREFIX=$HOME/.local did not install'
	else
		check_exit $i
	fi
	i=$((i + 1))
done

# The netcat block: what its listener printed, in order.
if [ -f "$S/inbox" ] &&
   grep -o 'hello$\|line [0-9]$' "$S/inbox" | head -n 4 | tr '\n' ,
then :; fi >"$T/order"
if [ "$(cat "$T/order")" = "hello,line 1,line 2,line 3," ]; then
	ok "README netcat: inbox has hello, line 1, line 2, line 3 in order"
else
	fail "README netcat: inbox is: $(cat "$S/inbox" 2>/dev/null)"
fi

# Stops what the blocks left running (the listener, the tour node).
i=1
while [ "$i" -le "$nblocks" ]; do
	eval "bp=\${block${i}_pid:-}"
	[ -n "$bp" ] && kill -- "-$bp" 2>/dev/null
	i=$((i + 1))
done

# Commands the README names in its prose and tables, not run here (they
# take minutes, or are this run): each make target must exist (make -n
# resolves it without running anything), and each pairmesh subcommand must
# accept every option the README gives it (its --help lists them).
for t in $(grep -o '`make [a-z][a-z-]*' README.md | sed 's/`make //' |
	   sort -u); do
	if make -n -C "$ROOT" "$t" >/dev/null 2>"$T/make.err"; then
		ok "README names make $t: the target exists"
	else
		fail "README names make $t, which make does not know"
		cat "$T/make.err"
	fi
done
# The README says what the two commands install: every package of
# `make deps` (make -n prints its list without installing anything).
for p in $(make -s -n -C "$ROOT" deps | grep -o 'for p in [^;]*' |
	   sed 's/for p in //'); do
	if grep -q "\`$p\`" README.md; then
		ok "README names $p, which make deps installs"
	else
		fail "make deps installs $p, which the README does not name"
	fi
done
grep -o '`pairmesh [a-z][^`]*`' README.md | tr -d '`' | sort -u >"$T/cmds"
while read -r _ sub rest; do
	help=$("$ROOT/$BUILD/pairmesh" "$sub" --help 2>&1) || {
		fail "README names pairmesh $sub: its --help fails"
		continue
	}
	for o in $(printf '%s\n' "$rest" | grep -o -- '--[a-z][a-z-]*'); do
		case "$help" in
		*"$o"*) ok "README's pairmesh $sub $o is in its --help" ;;
		*) fail "README's pairmesh $sub $o is not an option" ;;
		esac
	done
done <"$T/cmds"

# The tour's C program is examples/tour.c, from its first #include on.
awk '/^```c$/ { n++; f = dir "/c." n ".c"; inb = 1; next }
     /^```/ { inb = 0; next } inb { print > f }' dir="$T" README.md
sed -n '/^#include/,$p' examples/tour.c >"$T/tour.c"
found=0
for c in "$T"/c.*.c; do
	cmp -s "$c" "$T/tour.c" && found=1
	if cc -std=c11 -Wall -Werror -Wno-unused-parameter -Iinclude \
	   -fsyntax-only "$c" 2>"$T/cc.err"; then
		ok "README C block $(basename "$c") compiles"
	else
		fail "README C block $(basename "$c") does not compile"
		cat "$T/cc.err"
	fi
done
[ "$found" -eq 1 ] && ok "README shows examples/tour.c verbatim" ||
	fail "README's tour program differs from examples/tour.c"
finish
