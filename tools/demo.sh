#!/bin/sh
# SPDX-License-Identifier: MIT
# shellcheck disable=SC2317 # functions run through wait_for "$@"
#
# The local demo: four nodes A, B, C, D on 127.0.0.1, each started with
# --connect to the nodes before it, so every pair is connected once. Each
# node sends one message to every other node (by address) and one to
# itself. Checks: 4 messages delivered per node (3 peers + self) and exactly
# 3 connections per node, counted from /proc/net/tcp. Exit 0 or 1.
#
# POSIX sh + coreutils + awk. BUILD names the build directory.
set -u

BUILD=${BUILD:-build}
BIN=$BUILD/pairmesh
NODES="A B C D"
WAIT_TENTHS=60		# 6 s for each wait; the whole demo takes ~1 s

if [ ! -x "$BIN" ]; then
	echo "demo: $BIN not found; run 'make' first" >&2
	exit 1
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/pairmesh-demo.XXXXXX") || exit 1
pids=""

cleanup() {
	for p in $pids; do
		kill -9 "$p" 2>/dev/null
	done
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# A node that died must not kill the demo when we write to its stdin.
trap '' PIPE

fail() {
	echo "demo FAILED: $*" >&2
	for n in $NODES; do
		[ -s "$dir/$n.err" ] && sed "s/^/  $n stderr: /" "$dir/$n.err" >&2
	done
	exit 1
}

get() {
	eval "printf '%s' \"\${$1_$2}\""
}

# Waits until "$@" succeeds, up to WAIT_TENTHS tenths of a second.
wait_for() {
	t=0
	until "$@"; do
		t=$((t + 1))
		[ "$t" -gt "$WAIT_TENTHS" ] && return 1
		sleep 0.1
	done
}

has_ready() {
	grep -q '^ready ' "$dir/$1.err" 2>/dev/null && return 0
	# Exited before it was ready: stop waiting.
	kill -0 "$(get pid "$1")" 2>/dev/null || return 0
	return 1
}

has_lines() {
	[ "$(wc -l < "$dir/$1.out")" -ge "$2" ]
}

all_exited() {
	for p in $pids; do
		kill -0 "$p" 2>/dev/null && return 1
	done
	return 0
}

# --- start the nodes ---------------------------------------------------
fd=3
connect=""
for n in $NODES; do
	mkfifo "$dir/$n.in" || fail "mkfifo"
	# shellcheck disable=SC2086 # $connect is a list of options
	"$BIN" node $connect <"$dir/$n.in" >"$dir/$n.out" 2>"$dir/$n.err" &
	eval "pid_$n=\$!"
	pids="$pids $!"
	# Hold the FIFO's write end: the node's stdin stays open until we close.
	eval "exec $fd>\"\$dir/\$n.in\""
	eval "fd_$n=\$fd"
	fd=$((fd + 1))

	wait_for has_ready "$n" || fail "node $n printed no ready line"
	line=$(grep '^ready ' "$dir/$n.err") || fail "node $n did not start"
	id=$(printf '%s\n' "$line" | sed -n 's/.* id=\([0-9a-f]*\).*/\1/p')
	listen=$(printf '%s\n' "$line" | sed -n 's/.* listen=\([^ ]*\).*/\1/p')
	# shellcheck disable=SC2034 # read through get
	engine=$(printf '%s\n' "$line" | sed -n 's/.* engine=\([^ ]*\).*/\1/p')
	if [ -z "$id" ] || [ -z "$listen" ]; then
		fail "bad ready line: $line"
	fi
	eval "id_$n=\$id; listen_$n=\$listen; engine_$n=\$engine"
	connect="$connect --connect $listen"
done

# --- every node sends to every node, itself included --------------------
for n in $NODES; do
	for m in $NODES; do
		if [ "$m" = "$n" ]; then
			line="self hello from $n to itself"
		else
			line="$(get listen "$m") hello from $n to $m"
		fi
		printf '%s\n' "$line" >&"$(get fd "$n")" ||
			fail "cannot write to node $n"
	done
done

for n in $NODES; do
	wait_for has_lines "$n" 4 ||
		fail "node $n received $(wc -l < "$dir/$n.out") of 4 messages"
done

# --- connections per node, from /proc/net/tcp ----------------------------
# Each node's sockets are found by inode through /proc/PID/fd; a socket's
# peer is the node listening on its remote port, or else the node owning
# the socket whose local port is that remote port.
map="$dir/map"
: >"$map"
for n in $NODES; do
	port=$(get listen "$n")
	printf 'port %04X %s\n' "${port##*:}" "$n" >>"$map"
	for f in /proc/"$(get pid "$n")"/fd/*; do
		l=$(readlink "$f" 2>/dev/null) || continue
		case $l in
		socket:*)
			l=${l#socket:[}
			printf 'inode %s %s\n' "${l%]}" "$n" >>"$map"
			;;
		esac
	done
done
awk '
FILENAME == ARGV[1] {
	if ($1 == "port") listener[$2] = $3; else owner[$2] = $3
	next
}
FNR > 1 && $4 == "01" && ($10 in owner) {
	split($2, l, ":"); split($3, r, ":")
	k++; who[k] = owner[$10]; rport[k] = r[2]; at[l[2]] = owner[$10]
}
END {
	for (i = 1; i <= k; i++) {
		n = who[i]
		p = (rport[i] in listener) ? listener[rport[i]] : at[rport[i]]
		conns[n]++
		if (!((n, p) in seen)) {
			seen[n, p] = 1
			peers[n] = peers[n] (peers[n] == "" ? "" : " ") p
		}
	}
	for (n in conns) print n, conns[n], peers[n]
}' "$map" /proc/net/tcp >"$dir/conns"

# --- report --------------------------------------------------------------
ok=1
echo "pairmesh demo: 4 nodes on 127.0.0.1, every pair dialled once"
echo
printf '  %-4s %-16s  %-21s %-8s  %-14s  %s\n' node id listen engine \
	connections "messages received"
for n in $NODES; do
	c=$(awk -v n="$n" '$1 == n { print $2 }' "$dir/conns")
	peers=$(awk -v n="$n" '$1 == n { $1 = $2 = ""; print }' "$dir/conns" |
		tr ' ' '\n' | grep . | sort | tr -d '\n')
	c=${c:-0}
	got=0
	from=""
	for m in $NODES; do
		if [ "$m" = "$n" ]; then
			want="$(get id "$m") hello from $m to itself"
		else
			want="$(get id "$m") hello from $m to $n"
		fi
		k=$(grep -cxF "$want" "$dir/$n.out")
		got=$((got + k))
		[ "$k" -eq 1 ] && from="$from$m"
	done
	total=$(wc -l < "$dir/$n.out")
	mark_c="✓"
	mark_m="✓"
	# 3 sockets, to 3 different nodes
	if [ "$c" -ne 3 ] || [ "${#peers}" -ne 3 ]; then
		mark_c="✗"
		ok=0
	fi
	if [ "$got" -ne 4 ] || [ "$total" -ne 4 ]; then
		mark_m="✗"
		ok=0
	fi
	# The marks are 1 column but 3 bytes: keep them out of the widths.
	printf '  %-4s %-16s  %-21s %-8s  %s %-12s  %s %d/4 from %s\n' \
		"$n" "$(get id "$n")" "$(get listen "$n")" "$(get engine "$n")" \
		"$mark_c" "$c to $peers" "$mark_m" "$got" "$from"
done

# --- EOF on every stdin: each node flushes, closes, exits 0 --------------
for n in $NODES; do
	eval "exec $(get fd "$n")>&-"
done
wait_for all_exited || fail "nodes still running 6 s after EOF"
for n in $NODES; do
	wait "$(get pid "$n")"
	st=$?
	[ "$st" -eq 0 ] || fail "node $n exited with status $st"
	if grep -q '^error:' "$dir/$n.err"; then
		sed "s/^/  $n: /" "$dir/$n.err"
		ok=0
	fi
done
pids=""

echo
if [ "$ok" -eq 1 ]; then
	echo "✓ demo passed: 4 nodes, 6 connections (3 per node)," \
		"16 messages delivered, clean exits"
	exit 0
fi
fail "see the ✗ marks above"
