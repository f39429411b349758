# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Sourced by the fault scenarios (tests/fault/f_*.sh). Starts seqnode
# processes (each with a report file), network namespaces, and checks at
# the end with seqcheck that every numbered message arrived exactly once,
# in order, and that no node's memory went past a bound. Sleeps only pace
# the traffic between faults; every wait has a generous deadline that is a
# hang guard, never an assertion about time.
#
# A scenario sets T (its name) and sources this file. Environment: BUILD
# (build directory), ENGINE (auto | io_uring | epoll), KEEP=1 keeps the
# work directory. Exit 0 pass, 1 fail, 77 skip ("SKIP name: why").

set -u

BUILD=${BUILD:-build}
ENGINE=${ENGINE:-auto}
RSS_LIMIT_KB=${RSS_LIMIT_KB:-32768}	# per process, VmHWM
bin=$(cd "$BUILD/tests/fault" 2>/dev/null && pwd) || {
	echo "FAIL $T: $BUILD/tests/fault not built (make tests)" >&2
	exit 1
}
SEQNODE=$bin/seqnode
SEQCHECK=$bin/seqcheck
FLOOD=$bin/flood

dir=$(mktemp -d "${TMPDIR:-/tmp}/pairmesh-fault.XXXXXX") || exit 1
declare -A PID ADDR INC NSOF
pids=""
namespaces=""
faults=0

cleanup() {
	local p ns

	for p in $pids; do
		kill -9 "$p" 2>/dev/null
	done
	for p in $pids; do
		wait "$p" 2>/dev/null
	done
	for ns in $namespaces; do
		ip netns del "$ns" 2>/dev/null
	done
	if [ "${KEEP:-0}" = 1 ]; then
		echo "$T: work directory kept: $dir"
	else
		rm -rf "$dir"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

skip() {
	echo "SKIP $T: $*"
	exit 77
}

# Shows every process's log (the last lines) and fails.
fail() {
	local f

	echo "FAIL $T: $*"
	for f in "$dir"/*.err; do
		[ -s "$f" ] || continue
		echo "--- $(basename "$f") (last 15 lines)"
		tail -n 15 "$f"
	done
	exit 1
}

note() {
	echo "$T: $*"
}

# Root and the tools for namespaces; skips otherwise.
need_netns() {
	local why

	[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
	command -v ip >/dev/null 2>&1 || skip "iproute2 ('ip') not installed"
	if ! why=$(ip netns add "pmfprobe$$" 2>&1); then
		skip "ip netns add: ${why:-failed}"
	fi
	ip netns del "pmfprobe$$" 2>/dev/null
}

need_nft() {
	command -v nft >/dev/null 2>&1 || skip "nftables ('nft') not installed"
}

# make_ns VAR: a namespace with loopback up; its name goes into VAR.
make_ns() {
	local _ns="pmf${1}$$"

	ip netns add "$_ns" || fail "ip netns add $_ns"
	namespaces="$namespaces $_ns"
	ip -n "$_ns" link set lo up || fail "lo up in $_ns"
	printf -v "$1" '%s' "$_ns"
}

# start NAME NS ARGS...: a seqnode (NS "" = this namespace) with its own
# report, NAME.K.rep for its K-th process. Waits for its "ready" line;
# sets PID[NAME], ADDR[NAME] (its listen address).
start() {
	local name=$1 ns=$2 k=0 err rep i line
	shift 2

	while [ -e "$dir/$name.$k.rep" ] || [ -e "$dir/$name.$k.err" ]; do
		k=$((k + 1))
	done
	err=$dir/$name.$k.err
	rep=$dir/$name.$k.rep
	if [ -n "$ns" ]; then
		ip netns exec "$ns" "$SEQNODE" --engine "$ENGINE" \
			--report "$rep" "$@" 2>"$err" &
	else
		"$SEQNODE" --engine "$ENGINE" --report "$rep" "$@" 2>"$err" &
	fi
	PID[$name]=$!
	NSOF[$name]=$ns
	pids="$pids $!"
	for i in $(seq 1 200); do
		line=$(grep -m1 '^ready ' "$err" 2>/dev/null) && break
		kill -0 "${PID[$name]}" 2>/dev/null ||
			fail "$name exited at start"
		sleep 0.05
	done
	[ -n "$line" ] || fail "$name not ready"
	ADDR[$name]=$(echo "$line" | sed 's/.* listen=\([^ ]*\).*/\1/')
}

# node_stat NAME KEY: a pm_node_stats value from NAME's latest report.
node_stat() {
	local rep

	rep=$(ls -t "$dir/$1".*.rep 2>/dev/null | head -n1)
	[ -n "$rep" ] || { echo 0; return; }
	sed -n "s/^stats .*\\b$2=\\([0-9]*\\).*/\\1/p" "$rep" | head -n1
}

# sent_count NAME: messages NAME's latest process committed, all targets.
sent_count() {
	local rep

	rep=$(ls -t "$dir/$1".*.rep 2>/dev/null | head -n1)
	awk '$1 == "sent" { s += $3 } END { print s + 0 }' "$rep"
}

kill9() {
	kill -9 "${PID[$1]}" 2>/dev/null
	wait "${PID[$1]}" 2>/dev/null
	faults=$((faults + 1))
}

alive() {
	local n p

	for n in "${!PID[@]}"; do
		p=${PID[$n]}
		kill -0 "$p" 2>/dev/null && echo "$n"
	done
}

# finish [--relay-loss-ok]: stops the senders, waits (up to 20 s) until
# every message committed so far has arrived, ends the nodes gracefully
# and runs the final check. Fails on any message lost while both ends
# lived, duplicated, reordered or corrupted, or a process over
# RSS_LIMIT_KB.
finish() {
	local n i ok=0 out

	for n in $(alive); do
		kill -USR1 "${PID[$n]}"
	done
	sleep 0.3	# the reports rewritten after the stop
	for i in $(seq 1 100); do
		if "$SEQCHECK" "$@" "$dir"/*.rep >/dev/null 2>&1; then
			ok=1
			break
		fi
		sleep 0.2
	done
	for n in $(alive); do
		kill -TERM "${PID[$n]}"
	done
	for n in "${!PID[@]}"; do
		wait "${PID[$n]}" 2>/dev/null
	done
	out=$("$SEQCHECK" --rss-limit-kb "$RSS_LIMIT_KB" "$@" "$dir"/*.rep)
	st=$?
	echo "$out" | sed "s/^/$T: /"
	CHECK_LINE=$(echo "$out" | grep '^check:')
	note "faults injected: $faults"
	echo "FAULTS $T $faults $CHECK_LINE"
	[ $ok = 1 ] || fail "messages still missing after 20 s of draining"
	[ $st = 0 ] || fail "seqcheck found lost, duplicated, reordered" \
		"or corrupt messages, or a process over $RSS_LIMIT_KB kB"
	echo "PASS $T"
}
