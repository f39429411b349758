#!/bin/sh
# SPDX-License-Identifier: MIT
# shellcheck disable=SC2317 # functions run through soon "$@"
# shellcheck disable=SC2154,SC2034 # variables set and read through eval
#
# The local demo, live, in two acts on 127.0.0.1.
#
# 1. The mesh builds itself: A starts alone, B knows only A, C only B, D
#    only C. The nodes tell each other whom they know and dial the rest, so
#    each ends up with exactly 3 connections, checked in the kernel's socket
#    table (/proc/net/tcp). Then each node sends one message to every other
#    node by id and one to '*'; each must receive 3 + 3, each exactly once.
# 2. A relay: X - Y - Z with --no-auto-connect. X sends to Z's id; it
#    reaches Z through Y, shown by Z's output, X's route and Y's "relayed"
#    counter in its SIGUSR1 stats line.
#
# POSIX sh + coreutils + awk. BUILD names the build directory. Exit 0 or 1.
# Few forks on purpose: on a busy machine each one costs.
set -u

BUILD=${BUILD:-build}
BIN=$BUILD/pairmesh
MESH="A B C D"
CHAIN="X Y Z"

if [ ! -x "$BIN" ]; then
	echo "demo: $BIN not found; run 'make' first" >&2
	exit 1
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/pairmesh-demo.XXXXXX") || exit 1
pids=""
nodes=""		# started so far, for the failure report
fd=3			# next descriptor for a node's stdin (dash: 3 to 9)

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
	for n in $nodes; do
		[ -s "$dir/$n.err" ] &&
			sed "s/^/  $n stderr: /" "$dir/$n.err" >&2
	done
	exit 1
}

# wait_for STEP TRIES CMD...: runs CMD until it succeeds, sleeping STEP
# seconds between tries; returns 1 when it never did.
wait_for() {
	step=$1
	tries=$2
	shift 2
	t=1
	until "$@"; do
		[ "$t" -ge "$tries" ] && return 1
		t=$((t + 1))
		sleep "$step"
	done
}

# Up to ~5 s, polling every 20 ms.
soon() {
	wait_for 0.02 250 "$@"
}

has_ready() {
	grep -q '^ready ' "$dir/$1.err" 2>/dev/null && return 0
	# Exited before it was ready: stop waiting.
	eval "kill -0 \$pid_$1" 2>/dev/null || return 0
	return 1
}

has_lines() {
	[ "$(wc -l < "$dir/$1.out")" -ge "$2" ]
}

# start NAME [OPTIONS...]: starts a node and reads its ready line into
# id_NAME, listen_NAME, engine_NAME.
start() {
	n=$1
	shift
	mkfifo "$dir/$n.in" || fail "mkfifo"
	# Not the other nodes' stdin FIFOs: a node holding one would keep
	# that node from seeing EOF.
	"$BIN" node "$@" <"$dir/$n.in" >"$dir/$n.out" 2>"$dir/$n.err" \
		3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
	eval "pid_$n=\$!"
	pids="$pids $!"
	nodes="$nodes $n"
	# Hold the FIFO's write end: the node's stdin stays open until we close.
	eval "exec $fd>\"\$dir/\$n.in\""
	eval "fd_$n=\$fd"
	fd=$((fd + 1))

	soon has_ready "$n" || fail "node $n printed no ready line"
	line=$(grep '^ready ' "$dir/$n.err") || fail "node $n did not start"
	# shellcheck disable=SC2086 # split the line into its words
	set -- $line
	id=${2-}; id=${id#id=}
	listen=${3-}; listen=${listen#listen=}
	engine=${4-}; engine=${engine#engine=}
	if [ "$1" != ready ] || [ ${#id} -ne 16 ] || [ -z "$listen" ]; then
		fail "bad ready line: $line"
	fi
	eval "id_$n=\$id; listen_$n=\$listen; engine_$n=\$engine"
}

# say NODE LINE: one line on the node's stdin.
say() {
	eval "printf '%s\n' \"\$2\" >&\$fd_$1" || fail "cannot write to node $1"
}

all_exited() {
	for n in $1; do
		eval "kill -0 \$pid_$n" 2>/dev/null && return 1
	done
	return 0
}

# stop "NODES": EOF on each stdin; each flushes, closes and exits 0. The
# checks are done by then: a node still shutting down after 1 s is only
# noted, and killed.
stop() {
	for n in $1; do
		eval "f=\$fd_$n"
		eval "exec $f>&-"
	done
	wait_for 0.05 20 all_exited "$1"
	for n in $1; do
		eval "p=\$pid_$n"
		if kill -0 "$p" 2>/dev/null; then
			kill -9 "$p" 2>/dev/null
			wait "$p" 2>/dev/null
			echo "  note: node $n was still shutting down after 1 s"
			continue
		fi
		wait "$p"
		st=$?
		[ "$st" -eq 0 ] || fail "node $n exited with status $st"
	done
}

# Send failures (no route, ...) show as "error:" lines on stderr.
no_errors() {
	for n in $1; do
		if grep -q '^error:' "$dir/$n.err"; then
			sed -n "s/^error:/    $n: error:/p" "$dir/$n.err"
			ok=0
		fi
	done
}

# --- connections from the kernel socket table ----------------------------
# scan "NODES" sets conns_NAME (ESTABLISHED sockets the node holds) and
# peers_NAME (the names at their other ends, sorted, once each). A node's
# sockets are found by inode in /proc/PID/fd; a socket's peer is the node
# listening on its remote port, or else the node owning the socket whose
# local port is that remote port.
scan() {
	procs=""
	ports=""
	for n in $1; do
		eval "procs=\"\$procs /proc/\$pid_$n/fd:$n\""
		eval "ports=\"\$ports \${listen_$n##*:}:$n\""
	done
	set --
	for p in $procs; do
		set -- "$@" "${p%:*}"
	done
	# ls -l prints "/proc/PID/fd:" headers, then "... -> socket:[INODE]".
	# shellcheck disable=SC2012 # the names are ours: digits
	eval "$(ls -l "$@" 2>/dev/null | awk -v procs="$procs" \
		-v ports="$ports" '
	BEGIN {
		n = split(procs, a, " ")
		for (i = 1; i <= n; i++) {
			split(a[i], b, ":")
			name[b[1] ":"] = b[2]
		}
		n = split(ports, a, " ")
		for (i = 1; i <= n; i++) {
			split(a[i], b, ":")
			listener[sprintf("%04X", b[1])] = b[2]
		}
	}
	NR == FNR {
		if ($0 in name) { cur = name[$0]; next }
		if ($NF ~ /^socket:\[/) {
			ino = $NF
			gsub(/[^0-9]/, "", ino)
			owner[ino] = cur
		}
		next
	}
	FNR > 1 && $4 == "01" && ($10 in owner) {
		split($2, l, ":"); split($3, r, ":")
		k++; who[k] = owner[$10]; rport[k] = r[2]; at[l[2]] = owner[$10]
	}
	END {
		for (i = 1; i <= k; i++) {
			n = who[i]
			p = rport[i] in listener ? listener[rport[i]] \
						 : at[rport[i]]
			conns[n]++
			if (p != "" && !((n, p) in seen)) {
				seen[n, p] = 1
				list[n] = list[n] p
			}
		}
		for (c in name) {
			n = name[c]
			s = ""
			for (o = 65; o < 91; o++) {
				ch = sprintf("%c", o)
				if (index(list[n], ch)) s = s ch
			}
			printf "conns_%s=%d; peers_%s=%s\n", n, conns[n], n, s
		}
	}' - /proc/net/tcp)"
}

# Every node of "NODES" holds exactly WANT sockets, to WANT other nodes.
conns_are() {
	scan "$1"
	for n in $1; do
		eval "c=\$conns_$n; p=\$peers_$n"
		[ "$c" -eq "$2" ] && [ "${#p}" -eq "$2" ] || return 1
	done
}

# --- stats through SIGUSR1 ------------------------------------------------
has_more_stats() {
	[ "$(grep -c '^{' "$dir/$1.err")" -gt "$2" ]
}

# stats NODE: asks for one stats line and prints it.
stats() {
	before=$(grep -c '^{' "$dir/$1.err")
	eval "kill -USR1 \$pid_$1" || fail "node $1 is gone"
	soon has_more_stats "$1" "$before" ||
		fail "node $1 printed no stats line after SIGUSR1"
	grep '^{' "$dir/$1.err" | tail -n 1
}

# peer_of LINE ID: the object about node ID in a stats line's peers.
peer_of() {
	printf '%s\n' "$1" | grep -o "{\"id\":\"$2\"[^}]*}"
}

field() {
	printf '%s\n' "$1" | sed -n "s/.*\"$2\":\"*\([^,\"}]*\).*/\1/p"
}

# The node's own "relayed" (the one after the peers array).
relayed_of() {
	printf '%s\n' "$1" | sed -n 's/.*\],"relayed":\([0-9]*\).*/\1/p'
}

# routes_to NODE OTHER: NODE knows a route to OTHER.
routes_to() {
	eval "other=\$id_$2"
	case $(stats "$1") in
	*"{\"id\":\"$other\""*'"reachable":true'*) return 0 ;;
	esac
	return 1
}

# === act 1: the mesh builds itself ========================================
start A
start B --connect "$listen_A"
start C --connect "$listen_B"
start D --connect "$listen_C"

# Polled every 100 ms, for up to 5 s.
wait_for 0.1 50 conns_are "$MESH" 3 ||
	fail "the mesh did not form: sockets A=${conns_A-?} B=${conns_B-?}" \
		"C=${conns_C-?} D=${conns_D-?}"
ok=1

echo "pairmesh demo, act 1: four nodes, each told about one other"
echo
printf '  %-4s %-16s  %-21s %-8s  %s\n' node id listen engine "started with"
for n in $MESH; do
	case $n in
	A) how="nothing (alone)" ;;
	B) how="--connect A" ;;
	C) how="--connect B" ;;
	D) how="--connect C" ;;
	esac
	eval "printf '  %-4s %-16s  %-21s %-8s  %s\n' $n \$id_$n \$listen_$n \
		\$engine_$n \"\$how\""
done
echo
echo "  connections, from the kernel socket table (/proc/net/tcp):"
echo
printf '        A  B  C  D   sockets\n'
for n in $MESH; do
	row="    $n "
	eval "p=\$peers_$n; c=\$conns_$n"
	for m in $MESH; do
		if [ "$m" = "$n" ]; then
			row="$row  ·"
		else
			case $p in
			*"$m"*) row="$row  ✓" ;;
			*) row="$row  ✗"; ok=0 ;;
			esac
		fi
	done
	printf '%s   %s\n' "$row" "$c"
done

# --- by id to each other node, and once to '*' -----------------------------
for n in $MESH; do
	for m in $MESH; do
		[ "$m" = "$n" ] && continue
		eval "say $n \"\$id_$m hello from $n to $m\""
	done
	say "$n" "* hello everyone, from $n"
done
for n in $MESH; do
	soon has_lines "$n" 6 ||
		fail "node $n received $(wc -l < "$dir/$n.out") of 6 messages"
done
# Time for a duplicate, if there were one, to show up.
sleep 0.3

echo
echo "  messages received, each counted once (by id / to '*'):"
echo
names=""
for m in $MESH; do
	eval "names=\"\$names \$id_$m:$m\""
done
for n in $MESH; do
	# Sets direct, from_d, bcast, from_b, total: the senders whose line
	# came exactly once, by kind.
	eval "$(awk -v names="$names" -v me="$n" '
	BEGIN {
		k = split(names, a, " ")
		for (i = 1; i <= k; i++) {
			split(a[i], b, ":")
			name[b[1]] = b[2]
			order[i] = b[2]
		}
	}
	{
		total++
		m = name[$1]
		if ($0 == $1 " hello from " m " to " me) d[m]++
		else if ($0 == $1 " hello everyone, from " m) e[m]++
	}
	END {
		for (i = 1; i <= k; i++) {
			m = order[i]
			if (d[m] == 1) { nd++; fd = fd m }
			if (e[m] == 1) { ne++; fe = fe m }
		}
		printf "direct=%d; from_d=%s; bcast=%d; from_b=%s; total=%d\n",
			nd, fd, ne, fe, total
	}' "$dir/$n.out")"
	mark="✓"
	if [ "$direct" -ne 3 ] || [ "$bcast" -ne 3 ] || [ "$total" -ne 6 ]; then
		mark="✗"
		ok=0
	fi
	printf '    %s  %s by id %d/3 from %s, to * %d/3 from %s, %d lines\n' \
		"$n" "$mark" "$direct" "$from_d" "$bcast" "$from_b" "$total"
done
no_errors "$MESH"
[ "$ok" -eq 1 ] || fail "see the ✗ marks above"

# === act 2: a relay ======================================================
start X --no-auto-connect
start Y --no-auto-connect --connect "$listen_X"
start Z --no-auto-connect --connect "$listen_Y"

# Both ends know the whole chain: no mesh news is left for Y to relay.
soon routes_to X Z || fail "X learned no route to Z"
soon routes_to Z X || fail "Z learned no route to X"
scan "$CHAIN"
before=$(relayed_of "$(stats Y)")
[ -n "$before" ] || fail "no \"relayed\" in Y's stats"
say X "$id_Z hello Z, from X through Y"
want="$id_X hello Z, from X through Y"
soon grep -qxF "$want" "$dir/Z.out" || fail "Z did not receive X's line"
after=$(relayed_of "$(stats Y)")
[ -n "$after" ] || fail "no \"relayed\" in Y's stats"
route=$(peer_of "$(stats X)" "$id_Z")
hops=$(field "$route" hops)
via=$(field "$route" via)
direct=$(field "$route" direct)

echo
echo "pairmesh demo, act 2: a chain with --no-auto-connect"
echo
printf '  %-4s %-16s  %-21s %s\n' node id listen "started with"
for n in $CHAIN; do
	case $n in
	X) how="--no-auto-connect" ;;
	Y) how="--no-auto-connect --connect X" ;;
	Z) how="--no-auto-connect --connect Y" ;;
	esac
	eval "printf '  %-4s %-16s  %-21s %s\n' $n \$id_$n \$listen_$n \
		\"\$how\""
done
echo
printf '    sockets:   X to %s, Y to %s, Z to %s\n' "$peers_X" "$peers_Y" \
	"$peers_Z"
printf '    X stdin:   %s hello Z, from X through Y\n' "$id_Z"
printf '    Z stdout:  %s\n' "$want"
printf '    X route:   Z is %s hops away via %s (Y), direct: %s\n' "$hops" \
	"$via" "$direct"
printf '    Y stats:   "relayed":%s -> "relayed":%s\n' "$before" "$after"
echo
mark="✓"
if [ "$hops" != 2 ] || [ "$via" != "$id_Y" ] || [ "$direct" != false ] ||
	[ "$((after - before))" -ne 1 ] || [ "$peers_X" != Y ] ||
	[ "$peers_Z" != Y ]; then
	mark="✗"
	ok=0
fi
printf '    %s relayed path: X -> Y -> Z\n' "$mark"
no_errors "$CHAIN"
[ "$ok" -eq 1 ] || fail "see the ✗ marks above"
echo
stop "$MESH $CHAIN"
pids=""
echo "✓ demo passed: 4 nodes built the full mesh (6 connections) from one" \
	"introduction each,"
echo "  24 messages delivered once each, X -> Y -> Z relayed by Y"
exit 0
