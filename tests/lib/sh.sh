# SPDX-License-Identifier: MIT
# Helpers for the shell tests (POSIX sh; sourced, not run). Processes run
# in the background with stdin from a FIFO this shell holds open, stdout and
# stderr in files; every wait is bounded by a deadline, never a timing
# assertion. Everything started is killed and the scratch directory removed
# on exit. $BUILD names the build directory (default build).

BUILD=${BUILD:-build}
T=$(mktemp -d "${TMPDIR:-/tmp}/pairmesh-test.XXXXXX") || exit 1
PIDS=""
FAILED=0
WAIT_S=${WAIT_S:-20}	# generous: the machine is shared

cleanup()
{
	for p in $PIDS; do
		kill "$p" 2>/dev/null
	done
	wait 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ok()
{
	echo "ok - $*"
}

fail()
{
	echo "FAIL - $*"
	FAILED=1
}

# Prints a process's output, for a failure's context.
show()
{
	for f in "$T/$1.out" "$T/$1.err"; do
		[ -s "$f" ] || continue
		echo "--- $f"
		tail -n 20 "$f"
	done
}

# spawn NAME CMD...: starts CMD; its stdin is the FIFO behind fd $NAME_fd.
spawn()
{
	name=$1
	shift
	# The lowest of 3..9 not open (close_in frees one for reuse).
	fd=3
	while [ -e "/proc/$$/fd/$fd" ]; do
		fd=$((fd + 1))
	done
	if [ "$fd" -gt 9 ]; then
		echo "spawn: out of descriptors" >&2
		exit 1
	fi
	mkfifo "$T/$name.in"
	"$@" <"$T/$name.in" >"$T/$name.out" 2>"$T/$name.err" &
	eval "${name}_pid=$!"
	PIDS="$PIDS $!"
	# Opening the FIFO's write end waits for the reader: the child.
	eval "exec $fd>\"\$T/\$name.in\""
	eval "${name}_fd=$fd"
}

# start NAME CMD...: starts CMD with stdin from /dev/null (no descriptor
# held, unlike spawn).
start()
{
	name=$1
	shift
	"$@" </dev/null >"$T/$name.out" 2>"$T/$name.err" &
	eval "${name}_pid=$!"
	PIDS="$PIDS $!"
}

# free_port: prints a TCP port nothing listens on now, below the kernel's
# ephemeral range (32768-60999 by default), where a dial's local port could
# take it between this check and the listener's bind.
free_port()
{
	lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)
	[ -n "$lo" ] && [ "$lo" -gt 20000 ] || lo=32768
	while :; do
		p=$(awk -v s="$$$(date +%N)" -v lo="$lo" 'BEGIN {
			srand(s % 2147483647);
			print 20000 + int(rand() * (lo - 20000)) }')
		[ -z "$(ss -Htln "sport = :$p" 2>/dev/null)" ] && break
	done
	echo "$p"
}

# wait_listen PORT: waits (bounded) until something listens on TCP PORT.
wait_listen()
{
	n=0
	while [ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; do
		[ "$n" -ge $((WAIT_S * 20)) ] && return 1
		sleep 0.05
		n=$((n + 1))
	done
}

# feed NAME LINE...: writes lines to NAME's stdin.
feed()
{
	name=$1
	shift
	eval "fd=\$${name}_fd"
	for l in "$@"; do
		printf '%s\n' "$l" >&"$fd"
	done
}

# close_in NAME: EOF on NAME's stdin.
close_in()
{
	eval "fd=\$${1}_fd"
	eval "exec $fd>&-"
}

# wait_for FILE ERE [COUNT]: waits until FILE has COUNT (default 1) lines
# matching ERE. Returns 1 after the deadline.
wait_for()
{
	n=0
	want=${3:-1}
	while [ "$n" -lt $((WAIT_S * 20)) ]; do
		if [ -f "$1" ] &&
		   [ "$(grep -c -E -- "$2" "$1" 2>/dev/null)" -ge "$want" ]; then
			return 0
		fi
		sleep 0.05
		n=$((n + 1))
	done
	return 1
}

# running PID: true while PID runs (an exited child stays a zombie, which
# kill -0 would still find, until it is waited for).
running()
{
	st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)
	[ -n "$st" ] && [ "$st" != Z ]
}

# wait_exit NAME: waits for NAME to exit (bounded) and sets $status.
wait_exit()
{
	eval "pid=\$${1}_pid"
	n=0
	while running "$pid" && [ "$n" -lt $((WAIT_S * 20)) ]; do
		sleep 0.05
		n=$((n + 1))
	done
	if running "$pid"; then
		kill "$pid"
		status=124
		wait "$pid" 2>/dev/null
		return 1
	fi
	wait "$pid"
	status=$?
	return 0
}

# ready NAME: waits for NAME's "ready id=... listen=..." line on stderr and
# sets NAME_id and NAME_addr.
ready()
{
	if ! wait_for "$T/$1.err" '^ready id='; then
		fail "$1 did not start"
		show "$1"
		return 1
	fi
	line=$(grep -m1 '^ready id=' "$T/$1.err")
	eval "${1}_id=$(echo "$line" | sed 's/.*id=\([0-9a-f]*\).*/\1/')"
	eval "${1}_addr=$(echo "$line" | sed 's/.*listen=\([^ ]*\).*/\1/')"
}

# engines: the backends this kernel runs (io_uring may be refused: Docker's
# seccomp profile, kernel.io_uring_disabled), with a SKIP line for a
# missing one.
engines()
{
	for e in io_uring epoll; do
		if PAIRMESH_ENGINE=$e "$BUILD/pairmesh" node </dev/null 2>&1 |
		   grep -q "engine=$e"; then
			printf '%s ' "$e"
		else
			echo "SKIP $e: refused by this kernel" >&2
		fi
	done
}

# Ends the script: 0 when no check failed.
finish()
{
	if [ "$FAILED" -ne 0 ]; then
		echo "$(basename "$0"): FAILED"
		exit 1
	fi
	echo "$(basename "$0"): passed"
	exit 0
}
