#!/bin/sh
# SPDX-License-Identifier: MIT
# The man pages: mandoc finds nothing to warn about in any of them;
# pairmesh(1) documents every subcommand and every option their --help
# lists; pairmesh(3) every function of include/pairmesh.h;
# pairmesh-protocol(7) is docs/PROTOCOL.md as tools/md2man.awk renders it.
. "$(dirname "$0")/lib/sh.sh"

MAN=docs/man

# text PAGE: the page rendered as plain text (no overstrike).
text()
{
	mandoc -T ascii "$1" 2>/dev/null | sed 's/.\x08//g'
}

PM=$BUILD/pairmesh
command -v mandoc >/dev/null || { fail "mandoc missing (make deps)"; finish; }

for p in $MAN/pairmesh.1 $MAN/pairmesh.3 $MAN/pairmesh-protocol.7; do
	if mandoc -T lint -W warning "$p" >"$T/lint" 2>&1 && [ ! -s "$T/lint" ]
	then
		ok "$p: mandoc -T lint clean"
	else
		fail "$p: mandoc -T lint"
		cat "$T/lint"
	fi
	# It renders, and its NAME line says what it is.
	if text "$p" | grep -q '^NAME'; then
		ok "$p renders"
	else
		fail "$p does not render"
	fi
done

# Subcommands: the lines under "Commands:" in `pairmesh --help`.
subs=$("$PM" --help | sed -n '/^Commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p')
[ -n "$subs" ] || fail "no subcommands found in pairmesh --help"
# The page as text, with roff's \- turned back into -.
sed 's/\\-/-/g' $MAN/pairmesh.1 >"$T/page1"
for s in $subs; do
	up=$(echo "$s" | tr a-z A-Z)
	if grep -q "^\.SH \"PAIRMESH $up\"" "$T/page1"; then
		ok "pairmesh(1) has a section for '$s'"
	else
		fail "pairmesh(1) lacks a section \"PAIRMESH $up\""
	fi
	"$PM" "$s" --help >"$T/help_$s" 2>&1
	opts=$(grep -o -- '--[a-z][a-z-]*' "$T/help_$s" | sort -u)
	[ -n "$opts" ] || fail "pairmesh $s --help lists no option"
	missing=""
	for o in $opts; do
		grep -q -- "$o\\b" "$T/page1" || missing="$missing $o"
	done
	if [ -z "$missing" ]; then
		ok "pairmesh(1) documents all $(echo $opts | wc -w) options of '$s'"
	else
		fail "pairmesh(1) does not document '$s' options:$missing"
	fi
done

# Functions: every pm_* the header declares, in NAME and in SYNOPSIS.
funcs=$(sed -n 's/^[a-z][a-z0-9_ ]*[ *]\(pm_[a-z0-9_]*\)(.*/\1/p' \
	include/pairmesh.h)
missing=""
for f in $funcs; do
	grep -q "^\.BI \"[^\"]*[ *]$f(" $MAN/pairmesh.3 || missing="$missing $f"
	sed -n '/^\.SH NAME/,/^\.SH/p' $MAN/pairmesh.3 | grep -qw "$f" ||
		missing="$missing $f(NAME)"
done
if [ -z "$missing" ]; then
	ok "pairmesh(3) declares all $(echo $funcs | wc -w) API functions"
else
	fail "pairmesh(3) misses:$missing"
fi

# pairmesh-protocol(7) is the current docs/PROTOCOL.md (make regenerates
# it; this catches a hand edit or a stale copy).
date=$(sed -n 's/^\.TH [^ ]* 7 \([^ ]*\) .*/\1/p' $MAN/pairmesh-protocol.7)
src=$(sed -n 's/^\.TH [^ ]* 7 [^ ]* "\([^"]*\)".*/\1/p' \
      $MAN/pairmesh-protocol.7)
awk -v name=pairmesh-protocol -v section=7 -v date="$date" \
    -v source="$src" -f tools/md2man.awk docs/PROTOCOL.md >"$T/proto.7"
if cmp -s "$T/proto.7" $MAN/pairmesh-protocol.7; then
	ok "pairmesh-protocol(7) matches docs/PROTOCOL.md"
else
	fail "pairmesh-protocol(7) is stale: run make man"
fi
# Every section of the document is a section of the page.
grep '^## ' docs/PROTOCOL.md | sed 's/^## //' | tr a-z A-Z >"$T/secs"
text $MAN/pairmesh-protocol.7 >"$T/proto.txt"
n=0
while IFS= read -r sec; do
	grep -qF "$sec" "$T/proto.txt" ||
		{ fail "pairmesh-protocol(7) lacks section '$sec'"; n=1; }
done <"$T/secs"
[ "$n" -eq 0 ] && ok "pairmesh-protocol(7) has all $(wc -l <"$T/secs") sections"
finish
