#!/bin/sh
# SPDX-License-Identifier: MIT
# shellcheck disable=SC2317 # functions run through trap and wait_for "$@"
#
# A relay across real network boundaries. Three network namespaces, the
# test's own hosts, joined by veth links A-B and B-C only: A cannot reach C
# at the IP level. B dials A, C dials B, all with --no-auto-connect.
#   1. A sends to C's id: it arrives, relayed by B (and 50 more, once each).
#   2. The A-B link goes down: A keeps sending to C and must get an
#      "error:" line (no route / unreachable) within a bounded wait.
# Needs root and iproute2; exit 77 (skip) with "SKIP netns: why" when
# namespaces cannot be made. BUILD names the build directory, ENGINE the
# backend (default auto). Exit 0 pass, 1 fail, 77 skip. The namespaces
# are always removed.
set -u

BUILD=${BUILD:-build}
ENGINE=${ENGINE:-auto}
WAIT_TENTHS=${WAIT_TENTHS:-300}	# each wait gives up after ~30 s
NS_A=pmA$$
NS_B=pmB$$
NS_C=pmC$$

skip() {
	echo "SKIP netns: $*"
	exit 77
}

BIN=$(cd "$(dirname "$BUILD/pairmesh")" 2>/dev/null && pwd)/pairmesh
[ -x "$BIN" ] || { echo "netns: $BUILD/pairmesh not found" >&2; exit 1; }
[ "$(id -u)" = 0 ] || skip "needs root"
command -v ip >/dev/null 2>&1 || skip "iproute2 ('ip') not installed"

dir=$(mktemp -d "${TMPDIR:-/tmp}/pairmesh-netns.XXXXXX") || exit 1
pids=""
made=""

cleanup() {
	for p in $pids; do
		kill -9 "$p" 2>/dev/null
	done
	for p in $pids; do
		wait "$p" 2>/dev/null
	done
	for ns in $made; do
		ip netns del "$ns" 2>/dev/null
	done
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
# A node that died must not kill the script when we write to its stdin.
trap '' PIPE

fail() {
	echo "netns FAILED: $*" >&2
	for n in A B C; do
		for s in err out; do
			[ -s "$dir/$n.$s" ] &&
				sed "s/^/  $n std$s: /" "$dir/$n.$s" >&2
		done
	done
	exit 1
}

if ! why=$(ip netns add "$NS_A" 2>&1); then
	skip "ip netns add: ${why:-failed}"
fi
made=$NS_A
ip netns add "$NS_B" || fail "ip netns add $NS_B"
made="$made $NS_B"
ip netns add "$NS_C" || fail "ip netns add $NS_C"
made="$made $NS_C"

# The veths are created inside the namespaces: nothing touches the host's.
ip -n "$NS_A" link add ab type veth peer name ba netns "$NS_B" ||
	fail "veth A-B"
ip -n "$NS_B" link add bc type veth peer name cb netns "$NS_C" ||
	fail "veth B-C"
ip -n "$NS_A" addr add 10.231.1.1/24 dev ab || fail "address A"
ip -n "$NS_B" addr add 10.231.1.2/24 dev ba || fail "address B-A"
ip -n "$NS_B" addr add 10.231.2.2/24 dev bc || fail "address B-C"
ip -n "$NS_C" addr add 10.231.2.3/24 dev cb || fail "address C"
for ns in $made; do
	ip -n "$ns" link set lo up || fail "lo up in $ns"
done
if ! { ip -n "$NS_A" link set ab up && ip -n "$NS_B" link set ba up &&
	ip -n "$NS_B" link set bc up && ip -n "$NS_C" link set cb up; }; then
	fail "links up"
fi
# B does not forward IP (a new namespace never does): only pairmesh relays.
# No TCP error comes from a link that just goes quiet: A must notice by the
# node's own keepalive (PING after 1 s idle, dead after 5 s of silence).

# Waits until "$@" succeeds, polling every 100 ms, up to WAIT_TENTHS.
wait_for() {
	t=0
	until "$@"; do
		t=$((t + 1))
		[ "$t" -ge "$WAIT_TENTHS" ] && return 1
		sleep 0.1
	done
	return 0
}

ready() {
	grep -q '^ready id=' "$dir/$1.err" && return 0
	eval "kill -0 \$pid_$1" 2>/dev/null || fail "node $1 exited at start"
	return 1
}

field() {
	sed -n "s/^ready .*$2=\([^ ]*\).*/\1/p" "$dir/$1.err" | head -n 1
}

# start NAME NS FD LISTEN [SEED]: stdin is a FIFO we hold open on FD.
start() {
	mkfifo "$dir/$1.in" || fail "mkfifo"
	seed=""
	[ $# -ge 5 ] && seed="--connect $5"
	# shellcheck disable=SC2086 # seed is empty or two words
	ip netns exec "$2" "$BIN" node --engine "$ENGINE" --no-auto-connect \
		--listen "$4" $seed <"$dir/$1.in" >"$dir/$1.out" \
		2>"$dir/$1.err" &
	pids="$pids $!"
	eval "pid_$1=$!"
	eval "exec $3>\"\$dir/\$1.in\""
	wait_for ready "$1" || fail "node $1 not ready"
	eval "id_$1=\$(field $1 id)"
	eval "listen_$1=\$(field $1 listen)"
}

start A "$NS_A" 3 10.231.1.1:0
start B "$NS_B" 4 10.231.2.2:0 "$(field A listen)"
start C "$NS_C" 5 10.231.2.3:0 "$(field B listen)"
# shellcheck disable=SC2154 # set by start through eval
{ [ -n "$id_A" ] && [ -n "$id_C" ]; } || fail "no node ids"

# 1. Through B. Until the LINKS have spread, A says "no route": retry.
i=0
got_c() {
	i=$((i + 1))
	echo "$id_C via-b-$i" >&3
	sleep 0.1
	grep -q "^$id_A via-b-" "$dir/C.out"
}
wait_for got_c || fail "A's message to C did not arrive through B"
# Fifty more, all arriving, and B's stats line (SIGUSR1) counts them as
# relayed (its few relayed LINKS floods cannot make fifty).
k=0
while [ "$k" -lt 50 ]; do
	k=$((k + 1))
	echo "$id_C bulk-$k" >&3
done
all_bulk() {
	[ "$(grep -c "^$id_A bulk-" "$dir/C.out")" -ge 50 ]
}
wait_for all_bulk || fail "not all of A's 50 messages reached C"
[ "$(grep -c "^$id_A bulk-" "$dir/C.out")" -eq 50 ] ||
	fail "C got some of A's messages twice"
# shellcheck disable=SC2154
kill -USR1 "$pid_B" || fail "signal B"
relayed() {
	n=$(sed -n 's/.*\],"relayed":\([0-9]*\),"dropped".*/\1/p' \
		"$dir/B.err" | tail -n 1)
	[ -n "$n" ] && [ "$n" -ge 51 ]
}
wait_for relayed || fail "B's stats do not show the messages relayed"

# 2. The A-B link goes away. Only errors after this point count.
before=$(wc -l <"$dir/A.err")
ip -n "$NS_A" link set ab down || fail "link down"
i=0
got_error() {
	i=$((i + 1))
	echo "$id_C after-down-$i" >&3
	sleep 0.2
	tail -n +"$((before + 1))" "$dir/A.err" |
		grep -Eq "^error: $id_C: (no route|unreachable)"
}
WAIT_TENTHS=$((WAIT_TENTHS / 2))	# 0.3 s a turn: the same ~30 s
wait_for got_error || fail "A got no error for C after the link went down"
if grep -q "after-down-" "$dir/C.out"; then
	fail "C got a message sent after the link went down"
fi

# Nothing crashed on the way.
for n in A B C; do
	eval "p=\$pid_$n"
	kill -0 "$p" 2>/dev/null || fail "node $n died"
done
line=$(tail -n +"$((before + 1))" "$dir/A.err" | grep -E "^error: $id_C:" |
	head -n 1)
echo "netns relay: ok (engine $ENGINE): after the link went down A sent" \
	"$i times, then: $line"
exit 0
