#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The soak (make soak; not in CI): a mesh of 8 nodes, each sending
# numbered messages to each of the other 7 over pair streams, for
# SOAK_SECONDS (default 600) under faults, one every 1-4 s, each kind in
# turn on a random node:
#
#   reset    ss -K of one node's connections (root)
#   drop     nft drops a random 20 % of one node's TCP segments for 2 s (root)
#   stop     SIGSTOP of one node for 2 s, past the liveness limit
#   kill     SIGKILL of one node, restarted 1-3 s later (a new process)
#
# then every node is drained and stopped, and seqcheck reports messages
# sent, delivered, lost (to a kill, which the guarantee allows, or while
# both ends lived, which it does not), duplicated, and peak RSS per node.
# As root the mesh runs in a network namespace of its own; otherwise on
# this host's loopback without resets and drops (said at the start).
# SOAK_SEED makes the fault sequence repeat; SOAK_RATE is messages per
# second per target (default 100). Exit 0 when nothing was lost while
# both ends lived, nothing duplicated, reordered or corrupt.
T=soak
. "$(dirname "$0")/lib.sh"

seconds=${SOAK_SECONDS:-600}
rate=${SOAK_RATE:-100}
RANDOM=${SOAK_SEED:-$$}
nodes=8
base=${SOAK_PORT:-7100}
ns=""
kinds="stop kill"
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null 2>&1 &&
   ip netns add "pmfprobe$$" 2>/dev/null; then
	ip netns del "pmfprobe$$"
	make_ns ns
	kinds="reset stop kill"
	if command -v nft >/dev/null 2>&1; then
		kinds="reset drop stop kill"
	fi
fi
note "$nodes nodes, $seconds s, $rate msg/s per target, faults: $kinds" \
	"${ns:+(in network namespace $ns)}"

launch() {	# launch I: (re)starts node I
	local i=$1 j args=()

	for ((j = 0; j < nodes; j++)); do
		[ "$j" = "$i" ] && continue
		args+=(--peer "$((j + 1))@127.0.0.1:$((base + j))")
	done
	start "n$i" "$ns" --listen "127.0.0.1:$((base + i))" --id $((i + 1)) \
		--rate "$rate" --size 32:2048 --keepalive 300 \
		--dead-after 1500 --resume 10000 --reconnect-max 500 \
		"${args[@]}"
}

# In the namespace, through nft; both directions of node I's port.
drop() {
	local port=$((base + $1))

	ip netns exec "$ns" nft -f - <<NFT
table inet pmsoak {
	chain in {
		type filter hook input priority 0;
		tcp sport $port numgen random mod 100 < 20 drop
		tcp dport $port numgen random mod 100 < 20 drop
	}
}
NFT
}

declare -A count
for k in $kinds; do count[$k]=0; done
for ((i = 0; i < nodes; i++)); do
	launch "$i"
done
end=$((SECONDS + seconds))
while [ "$SECONDS" -lt "$end" ]; do
	sleep $((1 + RANDOM % 4))
	# Each kind in turn, so a short run sees every one; the node, the
	# gaps and the durations are random.
	set -- $kinds
	shift $((faults % $#))
	kind=$1
	i=$((RANDOM % nodes))
	case $kind in
	reset)
		ip netns exec "$ns" ss -K "( sport = :$((base + i)) or" \
			"dport = :$((base + i)) )" >/dev/null 2>&1
		;;
	drop)
		drop "$i" || fail "nft drop rule"
		sleep 2
		ip netns exec "$ns" nft delete table inet pmsoak
		;;
	stop)
		kill -STOP "${PID[n$i]}"
		sleep 2
		kill -CONT "${PID[n$i]}"
		;;
	kill)
		kill9 "n$i"
		faults=$((faults - 1))	# counted below with the others
		sleep $((1 + RANDOM % 3))
		launch "$i"
		;;
	esac
	faults=$((faults + 1))
	count[$kind]=$((count[$kind] + 1))
	note "$(date +%T) fault $faults: $kind n$i"
done
summary=""
for k in $kinds; do summary="$summary $k=${count[$k]}"; done
note "faults by kind:$summary"
finish
