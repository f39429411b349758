#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Packet loss and a link cut on a real link. Two network namespaces joined
# by a veth pair; the nodes send numbered messages both ways. nft rules in
# A drop a random 10 % of the TCP segments in and out (numgen random; netem
# is not in this kernel) for 3 seconds, then 40 % for 2; then the link goes
# down for 4 seconds, longer than the liveness limit (--dead-after 1500),
# so both ends give the connection up and redial until it is back. Every
# message must arrive once, in order. Needs root and nft.
T=netloss
. "$(dirname "$0")/lib.sh"

need_netns
need_nft
make_ns nsa
make_ns nsb
ip -n "$nsa" link add ab type veth peer name ba netns "$nsb" || fail "veth"
ip -n "$nsa" addr add 10.232.0.1/24 dev ab || fail "address A"
ip -n "$nsb" addr add 10.232.0.2/24 dev ba || fail "address B"
ip -n "$nsa" link set ab up || fail "ab up"
ip -n "$nsb" link set ba up || fail "ba up"

opts=(--rate 2000 --size 32:4096 --resume 30000 --keepalive 300
      --dead-after 1500 --reconnect-max 500)
start a "$nsa" --listen 10.232.0.1:7001 --id a1 "${opts[@]}" \
	--peer b2@10.232.0.2:7002
start b "$nsb" --listen 10.232.0.2:7002 --id b2 "${opts[@]}" \
	--peer a1@10.232.0.1:7001

loss() {
	ip netns exec "$nsa" nft -f - <<NFT || fail "nft loss rules"
table inet pmloss {
	chain in {
		type filter hook input priority 0;
		meta l4proto tcp numgen random mod 100 < $1 drop
	}
	chain out {
		type filter hook output priority 0;
		meta l4proto tcp numgen random mod 100 < $1 drop
	}
}
NFT
}

sleep 1
loss 10
faults=$((faults + 1))
sleep 3
ip netns exec "$nsa" nft delete table inet pmloss || fail "nft delete"
loss 40
faults=$((faults + 1))
sleep 2
ip netns exec "$nsa" nft delete table inet pmloss || fail "nft delete"
sleep 1
ip -n "$nsa" link set ab down || fail "ab down"
faults=$((faults + 1))
sleep 4
ip -n "$nsa" link set ab up || fail "ab up"
sleep 2
note "timeouts: a $(node_stat a timeouts), b $(node_stat b timeouts);" \
	"resumed: a $(node_stat a resumed), b $(node_stat b resumed)"
[ "$(node_stat a resumed)" -gt 0 ] || [ "$(node_stat b resumed)" -gt 0 ] ||
	fail "no stream resumed: the link cut did not end a connection"
finish
