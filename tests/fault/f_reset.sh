#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Connection resets mid-stream. Two nodes in a network namespace of their
# own send numbered messages to each other; the connection between them is
# destroyed under them with `ss -K` (the kernel resets the socket), three
# times, then new connections are refused with TCP resets for a second by
# an nft rule while the established one is reset again. The streams must
# resume: every message arrives once, in order. Needs root.
T=reset
. "$(dirname "$0")/lib.sh"

need_netns
need_nft
make_ns ns

# Fixed ports: the namespace is ours. Both dial; the pair rule keeps one.
start a "$ns" --listen 127.0.0.1:7001 --id a1 --rate 3000 --size 32:2048 \
	--resume 30000 --peer b2@127.0.0.1:7002
start b "$ns" --listen 127.0.0.1:7002 --id b2 --rate 3000 --size 32:2048 \
	--resume 30000 --peer a1@127.0.0.1:7001

for i in 1 2 3; do
	sleep 1
	ip netns exec "$ns" ss -K state established >/dev/null 2>&1 ||
		fail "ss -K failed (kernel without CONFIG_INET_DIAG_DESTROY?)"
	faults=$((faults + 1))
done
sleep 1
ip netns exec "$ns" nft -f - <<NFT || fail "nft reject rule"
table inet pmfault {
	chain out {
		type filter hook output priority 0;
		tcp flags syn / syn,ack reject with tcp reset
	}
}
NFT
ip netns exec "$ns" ss -K state established >/dev/null 2>&1
faults=$((faults + 1))
sleep 1
ip netns exec "$ns" nft delete table inet pmfault || fail "nft delete"
sleep 1
[ "$(node_stat a resumed)" -gt 0 ] || [ "$(node_stat b resumed)" -gt 0 ] ||
	fail "no stream resumed: the resets did not hit"
note "resumed: a $(node_stat a resumed), b $(node_stat b resumed)"
finish
