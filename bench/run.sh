#!/bin/sh
# SPDX-License-Identifier: MIT
#
# bench/run.sh: runs `pairmesh bench` (io_uring and epoll) side by side
# with its peers (bench/peers: plain TCP, ZeroMQ, NNG; and iperf3 at
# 1 MiB), collects one JSON line per run into $BUILD/bench/results.jsonl
# and has bench/report.py rewrite the results section of PERF.md (between
# <!-- bench:begin --> and <!-- bench:end -->).
#
# Runs are interleaved: for each size and repetition, pairmesh io_uring,
# pairmesh epoll, tcp, zmq, nng (and iperf3) run back to back, so a burst
# of noise on this shared machine hits every implementation alike.
#
# Called by `make bench` (full: every size, 3 repetitions of 2 s) and
# `make bench-quick` (QUICK=1: 64 B and 1 MiB, latency, relay; 1 s once).
# Environment: BUILD (default build), QUICK, SECONDS_PER_RUN (whole
# seconds), REPS, PERF_MD (default PERF.md).
set -u

BUILD=${BUILD:-build}
QUICK=${QUICK:-0}
PERF_MD=${PERF_MD:-PERF.md}
PM=$BUILD/pairmesh
PEERS=$BUILD/bench/peers
OUT=$BUILD/bench
RES=$OUT/results.jsonl
ENGINES="io_uring epoll"

if [ "$QUICK" = 1 ]; then
	SECS=${SECONDS_PER_RUN:-1}
	REPS=${REPS:-1}
	SIZES="64 1048576"
else
	SECS=${SECONDS_PER_RUN:-2}
	REPS=${REPS:-3}
	SIZES="16 64 1024 16384 65536 1048576"
fi
LAT_SIZE=64
RELAY_SIZE=1024
FANIN_PEERS="100 1000"
SCALE_PEERS=10000
MESH_NODES=4

for f in "$PM" "$PEERS/tcp_bench" "$PEERS/zmq_bench" "$PEERS/nng_bench"; do
	if [ ! -x "$f" ]; then
		echo "run.sh: $f missing (make all bench-peers)" >&2
		exit 1
	fi
done
if ! "$PM" bench --help >/dev/null 2>&1; then
	echo "run.sh: '$PM bench' does not exist yet" >&2
	exit 1
fi
mkdir -p "$OUT"
: >"$RES"
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
NRUN=0
NFAIL=0
SHOW='msgs_per_s\|mb_per_s\|p50_us\|ratio\|rss_kib_per_peer'

# One run: LABEL REP CMD...; appends its JSON line with label, rep and the
# command added in front. A non-zero exit or a missing line is recorded as
# a "fail" line. The timeout only guards against a hang.
run()
{
	label=$1
	rep=$2
	shift 2
	NRUN=$((NRUN + 1))
	printf '[%3d] %s\n' "$NRUN" "$*" >&2
	timeout -k 5 $((SECS * 4 + 120)) "$@" >"$OUT/last.out" \
		2>"$OUT/last.err"
	rc=$?
	record "$label" "$rep" "$(grep '^{' "$OUT/last.out" | tail -n 1)" \
		"$rc" "$*"
}

# Strips what cannot go into a JSON string unescaped.
json_str()
{
	# shellcheck disable=SC1003 # a backslash, not an escaped quote
	tr '\n\t' '  ' | tr -d '\000-\037' | tr '"\\' "''" | cut -c1-300
}

# LABEL REP JSON RC CMD: writes the line, or a fail record.
record()
{
	pre="{\"label\":\"$1\",\"rep\":$2,\"cmd\":\"$(printf '%s' "$5" |
		json_str)\","
	if [ "$4" = 0 ] && [ -n "$3" ]; then
		case $3 in
		*'"fail"'* | *'"error"'*) ;;
		*)
			printf '%s%s\n' "$pre" "${3#\{}" >>"$RES"
			printf '      %s\n' "$(printf '%s' "$3" |
				grep -o "\"\\($SHOW\\)\":[^,}]*" |
				tr '\n' ' ')" >&2
			return
			;;
		esac
	fi
	NFAIL=$((NFAIL + 1))
	why="exit $4: $(tail -n 3 "$OUT/last.err" 2>/dev/null | json_str)"
	echo "      FAILED: $why" >&2
	if [ -n "$3" ]; then
		case $3 in
		*'"fail"'* | *'"error"'*)
			printf '%s%s\n' "$pre" "${3#\{}" >>"$RES" ;;
		*) printf '%s"fail":"%s",%s\n' "$pre" "$why" "${3#\{}" \
			>>"$RES" ;;
		esac
	else
		printf '%s"fail":"%s"}\n' "$pre" "$why" >>"$RES"
	fi
}

# Starts `iperf3 -s -1` on a free port below the ephemeral range (other
# programs' port-0 listeners live there) and checks that the listener on
# it is ours. Sets IPERF_PORT and SPID; 1 when no port worked.
iperf3_server()
{
	tries=0
	while [ $tries -lt 10 ]; do
		tries=$((tries + 1))
		IPERF_PORT=$((20000 + ($$ + NRUN * 7 + tries * 131) % 12000))
		iperf3 -s -1 -B 127.0.0.1 -p "$IPERF_PORT" >/dev/null \
			2>"$OUT/last.err" &
		SPID=$!
		i=0
		while [ $i -lt 50 ] && kill -0 "$SPID" 2>/dev/null; do
			if ss -ltnpH "sport = :$IPERF_PORT" 2>/dev/null |
			   grep -q "pid=$SPID,"; then
				return 0
			fi
			sleep 0.1
			i=$((i + 1))
		done
		kill "$SPID" 2>/dev/null
		wait "$SPID" 2>/dev/null
	done
	return 1
}

# iperf3 single stream, 1 MiB writes: the loopback ceiling.
run_iperf3()
{
	rep=$1
	NRUN=$((NRUN + 1))
	if ! iperf3_server; then
		cmd="iperf3 -s -1 -B 127.0.0.1 -p PORT"
		printf '[%3d] %s\n' "$NRUN" "$cmd" >&2
		record iperf3 "$rep" "" 1 "$cmd"
		return
	fi
	# The port varies; the command line names it PORT so that the
	# report lists it once.
	cmd="iperf3 -s -1 -B 127.0.0.1 -p PORT &"
	cmd="$cmd iperf3 -c 127.0.0.1 -p PORT -l 1M -t $SECS -J"
	printf '[%3d] %s\n' "$NRUN" \
		"$(echo "$cmd" | sed "s/PORT/$IPERF_PORT/g")" >&2
	timeout -k 5 $((SECS + 60)) iperf3 -c 127.0.0.1 -p "$IPERF_PORT" \
		-l 1M -t "$SECS" -J >"$OUT/iperf3.json" 2>>"$OUT/last.err"
	rc=$?
	kill "$SPID" 2>/dev/null
	wait "$SPID" 2>/dev/null
	line=$(python3 bench/report.py --iperf3 "$OUT/iperf3.json" 1048576) ||
		rc=1
	record iperf3 "$rep" "$line" "$rc" "$cmd"
}

# Throughput: every size, every implementation, interleaved.
for size in $SIZES; do
	r=1
	while [ $r -le "$REPS" ]; do
		for e in $ENGINES; do
			run "pm-$e" $r "$PM" bench throughput --size "$size" \
				--seconds "$SECS" --engine "$e" --json
		done
		run tcp $r "$PEERS/tcp_bench" --mode throughput --size "$size" \
			--seconds "$SECS" --json
		run zmq $r "$PEERS/zmq_bench" --mode pushpull --size "$size" \
			--seconds "$SECS" --json
		run nng $r "$PEERS/nng_bench" --mode throughput --size "$size" \
			--seconds "$SECS" --json
		[ "$size" = 1048576 ] && run_iperf3 $r
		r=$((r + 1))
	done
done

# Latency: ping-pong round trips at 64 B.
r=1
while [ $r -le "$REPS" ]; do
	for e in $ENGINES; do
		run "pm-$e" $r "$PM" bench latency --size $LAT_SIZE \
			--seconds "$SECS" --engine "$e" --json
	done
	run tcp $r "$PEERS/tcp_bench" --mode latency --size $LAT_SIZE \
		--seconds "$SECS" --json
	run zmq $r "$PEERS/zmq_bench" --mode reqrep --size $LAT_SIZE \
		--seconds "$SECS" --json
	run nng $r "$PEERS/nng_bench" --mode latency --size $LAT_SIZE \
		--seconds "$SECS" --json
	r=$((r + 1))
done

# Relay through a middle node, against the direct path, at 1 KiB.
r=1
while [ $r -le "$REPS" ]; do
	for e in $ENGINES; do
		run "pm-$e" $r "$PM" bench relay --size $RELAY_SIZE \
			--seconds "$SECS" --engine "$e" --json
	done
	r=$((r + 1))
done

if [ "$QUICK" != 1 ]; then
	for peers in $FANIN_PEERS; do
		r=1
		while [ $r -le "$REPS" ]; do
			for e in $ENGINES; do
				run "pm-$e" $r "$PM" bench fanin \
					--peers "$peers" --seconds "$SECS" \
					--engine "$e" --json
			done
			r=$((r + 1))
		done
	done
	r=1
	while [ $r -le "$REPS" ]; do
		run pm-io_uring $r "$PM" bench scale --peers $SCALE_PEERS \
			--seconds "$SECS" --engine io_uring --json
		r=$((r + 1))
	done
	r=1
	while [ $r -le "$REPS" ]; do
		for e in $ENGINES; do
			run "pm-$e" $r "$PM" bench mesh --nodes $MESH_NODES \
				--seconds "$SECS" --engine "$e" --json
		done
		r=$((r + 1))
	done
fi

echo "run.sh: $NRUN runs, $NFAIL failed; results in $RES" >&2
python3 bench/report.py --results "$RES" --perf "$PERF_MD" \
	--started "$STARTED" --quick "$QUICK" --reps "$REPS" --seconds "$SECS" \
	--out "$OUT/report.md" || exit 1
echo "run.sh: results section of $PERF_MD rewritten" >&2
[ "$NFAIL" = 0 ]
