#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the programs of examples/ (as built by make, in $BUILD/examples) on
# both engines and checks what they print: the echo peer answers the CLI,
# a three-member chat delivers to all and privately, a 6 MB file arrives
# whole (compared with cmp and with coreutils' b2sum, not with the example's
# own hash), the README tour says hello.
. "$(dirname "$0")/lib/sh.sh"

EX=$BUILD/examples
PM=$BUILD/pairmesh
for p in echo chat file_send file_recv tour; do
	[ -x "$EX/$p" ] || { fail "$EX/$p not built"; finish; }
done

# A random file that does not fit one ring (1 MiB) nor one message.
head -c 6000000 /dev/urandom >"$T/big" || exit 1
want_hash=$(b2sum -l 256 "$T/big" | cut -d' ' -f1)

# kill_wait NAME: ends a process still running (a looping example).
kill_wait()
{
	eval "pid=\$${1}_pid"
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

for e in $(engines); do
	export PAIRMESH_ENGINE=$e

	# echo: what the CLI sends by id comes back, by id.
	start echo_$e "$EX/echo"
	ready echo_$e || continue
	eval "eid=\$echo_${e}_id eaddr=\$echo_${e}_addr"
	spawn cli_$e "$PM" node --connect "$eaddr"
	ready cli_$e || continue
	feed cli_$e "$eid hello echo" "$eid second line"
	if wait_for "$T/cli_$e.out" "^$eid (hello echo|second line)\$" 2; then
		ok "$e: echo sends both lines back"
	else
		fail "$e: echo did not answer"
		show cli_$e
		show echo_$e
	fi
	close_in cli_$e
	wait_exit cli_$e
	kill_wait echo_$e

	# chat: alice <- bob <- carol; everyone learns everyone's nick.
	spawn alice_$e "$EX/chat" alice
	ready alice_$e || continue
	eval "aaddr=\$alice_${e}_addr"
	spawn bob_$e "$EX/chat" bob 127.0.0.1:0 "$aaddr"
	ready bob_$e || continue
	eval "baddr=\$bob_${e}_addr"
	spawn carol_$e "$EX/chat" carol 127.0.0.1:0 "$baddr"
	ready carol_$e || continue
	joined=1
	for who in alice bob carol; do
		wait_for "$T/${who}_$e.out" '^-- (alice|bob|carol) joined' 2 ||
			joined=0
	done
	if [ "$joined" -eq 1 ]; then
		ok "$e: three chat members know each other's nick"
	else
		fail "$e: chat members did not meet"
		show alice_$e; show bob_$e; show carol_$e
	fi
	feed alice_$e "hi all"
	feed carol_$e "/msg alice just for you"
	if wait_for "$T/bob_$e.out" '^<alice> hi all$' &&
	   wait_for "$T/carol_$e.out" '^<alice> hi all$' &&
	   wait_for "$T/alice_$e.out" '^\*carol\* just for you$'; then
		ok "$e: chat line reaches all, /msg only its addressee"
	else
		fail "$e: chat messages missing"
		show alice_$e; show bob_$e; show carol_$e
	fi
	# Sent after the private one on the same stream: once bob has it,
	# the private line would have arrived before, had it come to bob.
	feed carol_$e "bye"
	wait_for "$T/bob_$e.out" '^<carol> bye$'
	if grep -q 'just for you' "$T/bob_$e.out" \
	   "$T/carol_$e.out"; then
		fail "$e: a private line reached someone else"
	else
		ok "$e: nobody else saw the private line"
	fi
	for who in carol bob alice; do
		close_in ${who}_$e
		wait_exit ${who}_$e
		[ "$status" -eq 0 ] || fail "$e: chat $who exited $status"
	done

	# file_send -> file_recv: reserve/commit out, hash checked on arrival.
	start recv_$e "$EX/file_recv" 127.0.0.1:0 "$T/got_$e"
	ready recv_$e || continue
	eval "raddr=\$recv_${e}_addr"
	start send_$e "$EX/file_send" "$T/big" "$raddr"
	wait_exit send_$e
	st_send=$status
	wait_exit recv_$e
	if [ "$st_send" -eq 0 ] && [ "$status" -eq 0 ] &&
	   grep -q "^received 6000000 bytes blake2b-256 $want_hash ok\$" \
	   "$T/recv_$e.out" && cmp -s "$T/big" "$T/got_$e"; then
		ok "$e: 6 MB file arrived whole, its BLAKE2b matches b2sum"
	else
		fail "$e: file transfer (send $st_send, recv $status)"
		show send_$e
		show recv_$e
	fi

	# The README tour: the second node says hello to the first.
	tp=$(free_port)
	start tour1_$e "$EX/tour" "127.0.0.1:$tp"
	wait_listen "$tp" || fail "$e: tour did not listen"
	start tour2_$e "$EX/tour" 127.0.0.1:0 "127.0.0.1:$tp"
	if wait_for "$T/tour1_$e.out" '^[0-9a-f]{16}: hello$'; then
		ok "$e: tour node printed the other's hello"
	else
		fail "$e: tour hello missing"
		show tour1_$e; show tour2_$e
	fi
	kill_wait tour2_$e
	kill_wait tour1_$e
done
finish
