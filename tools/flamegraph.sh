#!/bin/sh
# SPDX-License-Identifier: MIT
#
# flamegraph.sh SCENARIO [ARGS...]: profiles `$BUILD/pairmesh bench
# SCENARIO ARGS...` with perf and writes
#   $BUILD/flame/SCENARIO.html    interactive flame graph (d3-flame-graph)
#   $BUILD/flame/SCENARIO.folded  folded stacks, one "frames count" a line
#   $BUILD/flame/SCENARIO.perf.data
# Every process of the scenario is in the profile: perf record follows
# forks. Each process is its own root ("pairmesh (PID)"), so the sender and
# the receiver of a pair can be told apart.
#
# The HTML needs d3-flame-graph's template; it is installed on first use
# with `npm install --prefix $BUILD/flame/npm d3-flame-graph@4` (version 5
# no longer ships the template). Set FLAME_TEMPLATE to use another copy.
#
# Example: make flamegraph SCENARIO=throughput ARGS="--size 64 --seconds 2"
#          BUILD=build sh tools/flamegraph.sh latency --seconds 2
set -eu

BUILD=${BUILD:-build}
FREQ=${FREQ:-999}

if [ $# -lt 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
	echo "usage: tools/flamegraph.sh SCENARIO [ARGS...]" >&2
	exit 2
fi
scen=$1
shift
case $scen in
*/* | .*) echo "flamegraph: bad scenario name: $scen" >&2; exit 2 ;;
esac

out=$BUILD/flame
data=$out/$scen.perf.data
folded=$out/$scen.folded
html=$out/$scen.html
tpl=$out/npm/node_modules/d3-flame-graph/dist/templates
tpl=${FLAME_TEMPLATE:-$tpl/d3-flamegraph-base.html}

die()
{
	echo "flamegraph: $*" >&2
	exit 1
}
command -v perf >/dev/null || die "perf missing (make bench-deps)"
[ -x "$BUILD/pairmesh" ] || die "$BUILD/pairmesh missing (make)"
mkdir -p "$out"

# Frame pointers: every object is built with -fno-omit-frame-pointer, and
# fp unwinding is cheap enough not to disturb a 2-CPU run much.
perf record -e cpu-clock -g -F "$FREQ" --call-graph fp -o "$data" -- \
	"$BUILD/pairmesh" bench "$scen" "$@"

# Folded stacks: root first, leaf last, the process as the root frame.
perf script -i "$data" -F comm,pid,ip,sym 2>/dev/null | awk '
function flush() {
	if (head != "")
		count[stack == "" ? head : head ";" stack]++
	head = ""
	stack = ""
}
/^[^\t]/ {
	flush()
	pid = $NF
	comm = $0
	sub(/[ \t]+[0-9]+[ \t]*$/, "", comm)
	sub(/^[ \t]+/, "", comm)
	head = comm " (" pid ")"
	next
}
/^\t/ {
	line = $0
	sub(/^[ \t]*[0-9a-f]+[ \t]*/, "", line)
	if (line == "")
		line = "[unknown]"
	gsub(/;/, ":", line)
	stack = stack == "" ? line : line ";" stack
	next
}
/^$/ { flush() }
END {
	flush()
	for (s in count)
		print s, count[s]
}' | sort >"$folded"
echo "flamegraph: $(wc -l <"$folded") distinct stacks in $folded" >&2

if [ ! -f "$tpl" ] && command -v npm >/dev/null; then
	echo "flamegraph: installing d3-flame-graph into $out/npm" >&2
	npm install --silent --no-audit --no-fund --prefix "$out/npm" \
		d3-flame-graph@4 >&2 || true
fi
if [ ! -f "$tpl" ]; then
	echo "flamegraph: no d3-flame-graph template, wrote $folded only" >&2
	exit 0
fi

# perf's own flamegraph script first; it reads the header of ./perf.data,
# hence the cd (and an absolute template path).
rm -f "$html"
abs_tpl=$(cd "$(dirname "$tpl")" && pwd)/$(basename "$tpl")
if (cd "$out" && ln -sf "$scen.perf.data" perf.data &&
    perf script -i "$scen.perf.data" report flamegraph \
	--template "$abs_tpl" -o "$scen.html") >/dev/null 2>&1 &&
   [ -s "$html" ]; then
	echo "flamegraph: wrote $html (perf script report flamegraph)" >&2
	exit 0
fi

# Fallback: the same JSON tree as perf's script, built from the folded
# stacks, poured into the same template.
python3 - "$folded" "$tpl" "$html" <<'EOF'
import json
import sys

folded, tpl, html = sys.argv[1:4]
root = {"n": "all", "l": "root", "v": 0, "c": []}
index = {}
for line in open(folded, encoding="utf-8", errors="replace"):
    stack, _, n = line.rstrip("\n").rpartition(" ")
    node, key = root, ()
    for name in stack.split(";"):
        key += (name,)
        child = index.get(key)
        if child is None:
            child = {"n": name, "l": "", "v": 0, "c": []}
            node["c"].append(child)
            index[key] = child
        node = child
    node["v"] += int(n)
opts = {"colorscheme": "blue-green", "context": ""}
text = open(tpl, encoding="utf-8").read()
text = text.replace("/** @options_json **/", json.dumps(opts))
text = text.replace("/** @flamegraph_json **/", json.dumps(root))
open(html, "w", encoding="utf-8").write(text)
EOF
echo "flamegraph: wrote $html (from the folded stacks)" >&2
