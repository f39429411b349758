#!/bin/bash
# SPDX-License-Identifier: MIT
#
# A peer that stops reading. a sends numbered messages to b as fast as 5000
# a second. b first keeps every message (its callback returns -EAGAIN, the
# stream pauses) for 3 seconds: a's ring fills, pm_send says -EAGAIN, and
# a's memory must stay bounded. Then b reads again (SIGHUP). Then b is
# stopped outright (SIGSTOP) for 3 seconds, longer than a's liveness
# limit: a gives the connection up and redials until b is back (SIGCONT).
# Every message must arrive once, in order. No root needed.
T=slowreader
. "$(dirname "$0")/lib.sh"

start b "" --listen 127.0.0.1:0 --id b2 --stop-reading --keepalive 300 \
	--dead-after 1500 --resume 30000
start a "" --listen 127.0.0.1:0 --id a1 --peer "b2@${ADDR[b]}" \
	--rate 5000 --size 1024:8192 --keepalive 300 --dead-after 1500 \
	--resume 30000 --reconnect-max 300
faults=$((faults + 1))
sleep 3
eagain=$(awk '$1 == "sent" { print $6 }' "$dir"/a.0.rep)
note "a: $(sent_count a) messages committed while b did not read," \
	"-EAGAIN $eagain times"
[ "${eagain:-0}" -gt 0 ] || fail "a never saw -EAGAIN from a full ring"
kill -HUP "${PID[b]}"
sleep 1
kill -STOP "${PID[b]}"
faults=$((faults + 1))
sleep 3
kill -CONT "${PID[b]}"
sleep 2
note "a: timeouts $(node_stat a timeouts), resumed $(node_stat a resumed)"
finish
