#!/bin/bash
# SPDX-License-Identifier: MIT
#
# kill -9 of a relay in a mesh with another path. Four nodes, links A-B,
# B-C, A-D, D-C only (A and C dial B and D; auto-connect off everywhere),
# so A reaches C only through a relay. A and C send numbered messages to
# each other with pm_send_to. Once traffic flows, the relay carrying more of
# it is killed with SIGKILL; the traffic must go on through the other one,
# and nothing sent between A and C may be lost or duplicated: routed
# messages are acknowledged end to end and resent over the other path. No
# root needed.
T=relay
. "$(dirname "$0")/lib.sh"

common=(--no-auto-connect --size 32:1024 --resume 3000)
start b "" --listen 127.0.0.1:0 --id b2 "${common[@]}"
start d "" --listen 127.0.0.1:0 --id d4 "${common[@]}"
start a "" --listen 127.0.0.1:0 --id a1 "${common[@]}" --to c3 \
	--rate 1000 --connect "${ADDR[b]}" --connect "${ADDR[d]}"
start c "" --listen 127.0.0.1:0 --id c3 "${common[@]}" --to a1 \
	--rate 1000 --connect "${ADDR[b]}" --connect "${ADDR[d]}"
sleep 2
rb=$(node_stat b relayed)
rd=$(node_stat d relayed)
note "relayed so far: b $rb, d $rd"
[ $((rb + rd)) -gt 0 ] || fail "nothing was relayed: no path through B or D"
victim=b
[ "$rd" -gt "$rb" ] && victim=d
note "killing relay $victim (SIGKILL)"
kill9 "$victim"
sleep 3
other=d
[ $victim = d ] && other=b
before=$(node_stat "$other" relayed)
sleep 1
[ "$(node_stat "$other" relayed)" -gt "$before" ] ||
	fail "no traffic through $other after $victim died"
finish
