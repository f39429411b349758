#!/bin/bash
# SPDX-License-Identifier: MIT
#
# A connection flood beyond the slab, and slow handshakes holding slots.
# Node s has a slab of 8 connections and gives a handshake 1 second; a
# (dialled by a) and s send numbered messages to each other. Then 60
# connections open to s at once, each trickling a valid HELLO one byte
# every 100 ms (it would take 5.6 s): the slab fills with them, the rest are
# refused; each held one is freed when its handshake time runs out, and the
# flood takes the slot again, for 4 seconds. Meanwhile a third node c dials
# s and must get its 500 messages through. Checks that s refused and timed
# out connections, that no message between live peers was lost or
# duplicated, and that memory stayed bounded. No root needed.
T=flood
. "$(dirname "$0")/lib.sh"

start s "" --listen 127.0.0.1:0 --id 5 --max-peers 8 --handshake-ms 1000 \
	--to a1 --rate 2000 --size 32:2048
start a "" --listen 127.0.0.1:0 --id a1 --peer "5@${ADDR[s]}" --rate 2000 \
	--size 32:2048
sleep 1
"$FLOOD" --addr "${ADDR[s]}" --conns 60 --hold-ms 4000 --trickle-ms 100 \
	>"$dir/flood.out" 2>&1 &
fpid=$!
pids="$pids $fpid"
faults=$((faults + 1))
sleep 0.5
start c "" --listen 127.0.0.1:0 --id c3 --peer "5@${ADDR[s]}" --rate 500 \
	--count 500
wait "$fpid" || fail "flood failed: $(cat "$dir/flood.out")"
note "$(cat "$dir/flood.out")"
for i in $(seq 1 300); do
	[ "$(sent_count c)" -ge 500 ] && break
	sleep 0.1
done
[ "$(sent_count c)" -ge 500 ] ||
	fail "c could not send its 500 messages after the flood"
note "s: rejected_busy $(node_stat s rejected_busy)," \
	"timeouts $(node_stat s timeouts)"
[ "$(node_stat s rejected_busy)" -gt 0 ] || fail "s refused no connection"
[ "$(node_stat s timeouts)" -gt 0 ] || fail "s timed no handshake out"
finish
