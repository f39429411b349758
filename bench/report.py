#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/report.py: turns bench/run.sh's results.jsonl into the results
section of PERF.md, between <!-- bench:begin --> and <!-- bench:end -->
(appended at the end when missing; the rest of the file is kept as is).

  report.py --results build/bench/results.jsonl --perf PERF.md \\
            [--started DATE] [--quick 0|1] [--reps N] [--seconds S] \\
            [--out build/bench/report.md]
  report.py --iperf3 FILE SIZE     one bench JSON line from `iperf3 -J`

Every row is the median of its runs with the min-max in parentheses.
Ratios divide medians taken in the same session (the runs interleave).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
PM = ("pm-io_uring", "pm-epoll")
PEERS = ("tcp", "zmq", "nng", "iperf3")
NAMES = {
    "pm-io_uring": "pairmesh io_uring",
    "pm-epoll": "pairmesh epoll",
    "tcp": "tcp_bench",
    "zmq": "ZeroMQ",
    "nng": "NNG pair1",
    "iperf3": "iperf3",
}
MIB = 1048576


def iperf3_line(path, size):
    """One bench line from iperf3's -J output; exit 1 when it failed."""
    try:
        with open(path, encoding="utf-8") as f:
            j = json.load(f)
        if j.get("error"):
            raise ValueError(j["error"])
        s = j["end"]["sum_received"]
        secs = float(s["seconds"])
        nbytes = float(s["bytes"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(json.dumps({"scenario": "throughput", "impl": "iperf3",
                          "size": size, "fail": "iperf3: %s" % e}))
        return 1
    print(json.dumps({
        "scenario": "throughput", "impl": "iperf3", "engine": "iperf3",
        "size": size, "seconds": round(secs, 3),
        "msgs_per_s": round(nbytes / size / secs, 1),
        "mb_per_s": round(nbytes / 1e6 / secs, 2),
        "p50_us": None, "p99_us": None, "p999_us": None,
    }, separators=(",", ":")))
    return 0


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                rows.append({"fail": "unparsable line %d" % n, "cmd": line})
    return rows


class Results:
    def __init__(self, rows):
        self.rows = rows
        # Peers say "fail", pairmesh bench says "error"; run.sh adds
        # "fail" to a run that exited non-zero.
        self.ok = [r for r in rows if "fail" not in r and "error" not in r]
        self.failed = [r for r in rows if "fail" in r or "error" in r]

    def values(self, label, scenario, field, **match):
        out = []
        for r in self.ok:
            if r.get("label") != label or r.get("scenario") != scenario:
                continue
            if any(r.get(k) != v for k, v in match.items()):
                continue
            v = r.get(field)
            if isinstance(v, (int, float)):
                out.append(float(v))
        return out

    def median(self, label, scenario, field, **match):
        v = self.values(label, scenario, field, **match)
        return statistics.median(v) if v else None


def si(v):
    """Rates: 20.6 M, 412 k, 2 160."""
    if v is None:
        return "—"
    if v >= 1e7:
        return "%.1f M" % (v / 1e6)
    if v >= 1e6:
        return "%.2f M" % (v / 1e6)
    if v >= 1e5:
        return "%.0f k" % (v / 1e3)
    if v >= 1e4:
        return "%.1f k" % (v / 1e3)
    return "%.0f" % v


def num(v, digits=None):
    if v is None:
        return "—"
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return "%.*f" % (digits, v)


def cell(vals, fmt):
    """median (min–max), or the single value, or a dash."""
    if not vals:
        return "—"
    m = fmt(statistics.median(vals))
    if len(vals) == 1:
        return m
    return "%s (%s–%s)" % (m, fmt(min(vals)), fmt(max(vals)))


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def rx(v):
    if v is None:
        return "—"
    if v >= 100:
        return "%.0f×" % v
    if v < 0.1:
        return "%.2g×" % v
    return "%.2f×" % v


def size_name(n):
    if n >= MIB and n % MIB == 0:
        return "%d MiB" % (n // MIB)
    if n >= 1024 and n % 1024 == 0:
        return "%d KiB" % (n // 1024)
    return "%d B" % n


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def throughput(res, sizes):
    out = ["### Throughput: one stream, one direction",
           "",
           "Messages per second and MB/s of payload (MB = 10^6 bytes). The "
           "last two columns divide the pairmesh median by the row's median "
           "(above 1: pairmesh is faster). Every implementation sends the "
           "body `pairmesh bench` sends (a sequence number and check bytes) "
           "and its receiver checks every message. tcp_bench packs "
           "length-prefixed messages into writes of at least 1 MiB and "
           "reads into a 256 KiB buffer; "
           "ZeroMQ (PUSH/PULL) and NNG (pair1) send one message per call "
           "with queues of 1000 messages (ZeroMQ: its default high-water "
           "mark; NNG: send and receive buffers set to 1000, from a default "
           "of none). iperf3 (one stream, 1 MiB writes) "
           "runs at 1 MiB only and sends no messages: its msgs/s is MB/s "
           "over the size.",
           ""]
    rows = []
    for size in sizes:
        pm = [res.median(l, "throughput", "mb_per_s", size=size) for l in PM]
        for label in PM + PEERS:
            mps = res.values(label, "throughput", "msgs_per_s", size=size)
            mbs = res.values(label, "throughput", "mb_per_s", size=size)
            if not mps and not mbs:
                continue
            me = res.median(label, "throughput", "mb_per_s", size=size)
            rows.append([size_name(size), NAMES[label], cell(mps, si),
                         cell(mbs, num), rx(ratio(pm[0], me)),
                         rx(ratio(pm[1], me))])
    out += table(["size", "implementation", "msgs/s", "MB/s",
                  "io_uring ÷ row", "epoll ÷ row"], rows)
    return out


def latency(res):
    out = ["### Latency: 64 B ping-pong",
           "",
           "Round-trip times in µs, from every round trip of the run "
           "(sorted, nearest rank); the median and min-max are over the "
           "runs, each after 1000 unrecorded round trips. The last two "
           "columns divide the pairmesh p50 by the row's p50 (below 1: "
           "pairmesh is faster). `pairmesh bench latency` polls without "
           "sleeping on both sides (see `pairmesh bench --help`); the "
           "peers block in the kernel (tcp_bench: blocking send/recv with "
           "TCP_NODELAY; ZeroMQ REQ/REP; NNG pair1).",
           ""]
    rows = []
    pm = [res.median(l, "latency", "p50_us") for l in PM]
    for label in PM + PEERS:
        p50 = res.values(label, "latency", "p50_us")
        if not p50:
            continue
        me = statistics.median(p50)
        rows.append([NAMES[label], cell(p50, num),
                     cell(res.values(label, "latency", "p99_us"), num),
                     cell(res.values(label, "latency", "p999_us"), num),
                     cell(res.values(label, "latency", "msgs_per_s"), si),
                     rx(ratio(pm[0], me)), rx(ratio(pm[1], me))])
    out += table(["implementation", "p50 µs", "p99 µs", "p99.9 µs",
                  "round trips/s", "io_uring p50 ÷ row",
                  "epoll p50 ÷ row"], rows)
    return out


def pm_only(res):
    out = []
    rows = []
    for label in PM:
        v = res.values(label, "relay", "msgs_per_s")
        if v:
            rows.append([NAMES[label], cell(v, si),
                         cell(res.values(label, "relay",
                                         "direct_msgs_per_s"), si),
                         cell(res.values(label, "relay", "ratio"), num)])
    if rows:
        out += ["", "### Relay: 1 KiB through a middle node", "",
                "`ratio` is relay ÷ direct, per run.", ""]
        out += table(["engine", "relayed msgs/s", "direct msgs/s",
                      "ratio"], rows)
    rows = []
    for peers in sorted({r.get("peers") for r in res.ok
                         if r.get("scenario") == "fanin"} - {None}):
        for label in PM:
            v = res.values(label, "fanin", "msgs_per_s", peers=peers)
            if v:
                rows.append([str(peers), NAMES[label], cell(v, si),
                             cell(res.values(label, "fanin", "mb_per_s",
                                             peers=peers), num),
                             cell(res.values(label, "fanin",
                                             "hub_cpu_ns_per_msg",
                                             peers=peers), num)])
    if rows:
        out += ["", "### Fan-in: many senders into one node", "",
                "`receiver CPU` is the receiving node's user + system "
                "time per message over the sending phase: on two cores "
                "the sending crowd takes most of the CPU, so msgs/s is "
                "bounded by the senders, while CPU per message compares "
                "what the receiving engines spend (lower is better).", ""]
        out += table(["peers", "engine", "msgs/s", "MB/s",
                      "receiver CPU ns/msg"], rows)
    rows = []
    for label in PM:
        for peers in sorted({r.get("peers") for r in res.ok
                             if r.get("scenario") == "scale" and
                             r.get("label") == label} - {None}):
            rows.append([NAMES[label], str(peers),
                         cell(res.values(label, "scale", "connect_s",
                                         peers=peers), num),
                         cell(res.values(label, "scale", "rss_kib_per_peer",
                                         peers=peers), num)])
    if rows:
        out += ["", "### Scale: idle peers", ""]
        out += table(["engine", "peers", "connect all (s)",
                      "RSS KiB per peer"], rows)
    rows = []
    for label in PM:
        v = res.values(label, "mesh", "msgs_per_s")
        if v:
            nodes = sorted({r.get("nodes") for r in res.ok
                            if r.get("scenario") == "mesh"} - {None})
            rows.append([NAMES[label], ", ".join(map(str, nodes)) or "—",
                         cell(v, si),
                         cell(res.values(label, "mesh", "mb_per_s"), num)])
    if rows:
        out += ["", "### Mesh: every node to every other", ""]
        out += table(["engine", "nodes", "msgs/s", "MB/s"], rows)
    return out


def engine_rows(res, sizes):
    """(row name, io_uring ÷ epoll) for every row both engines ran."""
    rows = []
    for size in sizes:
        rows.append(("throughput %s" % size_name(size), ratio(
            res.median(PM[0], "throughput", "msgs_per_s", size=size),
            res.median(PM[1], "throughput", "msgs_per_s", size=size))))
    # Latency: lower is better, so epoll ÷ io_uring.
    rows.append(("latency 64 B (p50)", ratio(
        res.median(PM[1], "latency", "p50_us"),
        res.median(PM[0], "latency", "p50_us"))))
    rows.append(("relay 1 KiB", ratio(res.median(PM[0], "relay",
                                                  "msgs_per_s"),
                                       res.median(PM[1], "relay",
                                                  "msgs_per_s"))))
    for peers in sorted({r.get("peers") for r in res.ok
                         if r.get("scenario") == "fanin"} - {None}):
        rows.append(("fanin %d" % peers, ratio(
            res.median(PM[0], "fanin", "msgs_per_s", peers=peers),
            res.median(PM[1], "fanin", "msgs_per_s", peers=peers))))
    rows.append(("mesh", ratio(res.median(PM[0], "mesh", "msgs_per_s"),
                               res.median(PM[1], "mesh", "msgs_per_s"))))
    return [(n, v) for n, v in rows if v is not None]


def verdict(v, target, higher):
    if v is None:
        return "not measured"
    if (v >= target) if higher else (v <= target):
        return "**met**"
    miss = (target - v) / target if higher else (v - target) / target
    return "**missed** by %.0f %%" % (100 * miss)


def targets(res, sizes):
    t = []
    io, ep = PM

    def both(a, b):
        return "%s (epoll %s)" % (rx(a), rx(b))

    def rel(field, size, peer):
        return [ratio(res.median(l, "throughput", field, size=size),
                      res.median(peer, "throughput", field, size=size))
                for l in PM]

    r = rel("msgs_per_s", 64, "tcp")
    t.append(["64 B throughput ≥ 0.8× tcp_bench", both(*r),
              verdict(r[0], 0.8, True)])
    r = rel("msgs_per_s", 64, "zmq")
    t.append(["64 B throughput ≥ 8× ZeroMQ", both(*r),
              verdict(r[0], 8.0, True)])
    r = rel("mb_per_s", MIB, "iperf3")
    t.append(["1 MiB throughput ≥ 0.9× iperf3", both(*r),
              verdict(r[0], 0.9, True)])
    r = [ratio(res.median(l, "latency", "p50_us"),
               res.median("tcp", "latency", "p50_us")) for l in PM]
    t.append(["64 B RTT p50 ≤ 1.15× tcp_bench ping-pong", both(*r),
              verdict(r[0], 1.15, False)])
    r = [res.median(l, "relay", "ratio") for l in PM]
    t.append(["relay 1 KiB ≥ 0.7× direct", both(*r),
              verdict(r[0], 0.7, True)])
    rows = engine_rows(res, sizes)
    if rows:
        worst = min(rows, key=lambda x: x[1])
        below = [n for n, v in rows if v < 1.0]
        t.append(["io_uring ≥ 1.0× epoll, every row",
                  "worst %s at %s; %d of %d rows below 1.0" %
                  (rx(worst[1]), worst[0], len(below), len(rows)),
                  verdict(worst[1], 1.0, True)])
    else:
        t.append(["io_uring ≥ 1.0× epoll, every row", "—",
                  "not measured"])
    v = ratio(res.median(io, "fanin", "msgs_per_s", peers=1000),
              res.median(ep, "fanin", "msgs_per_s", peers=1000))
    t.append(["io_uring ≥ 1.3× epoll at fanin 1000", rx(v),
              verdict(v, 1.3, True)])
    v = ratio(res.median(ep, "fanin", "hub_cpu_ns_per_msg", peers=1000),
              res.median(io, "fanin", "hub_cpu_ns_per_msg", peers=1000))
    t.append(["(the same, receiver CPU per message: epoll ÷ io_uring)",
              rx(v), verdict(v, 1.3, True)])
    v = res.median(io, "scale", "rss_kib_per_peer", peers=10000)
    t.append(["≤ 16 KiB RSS per idle peer at 10,000",
              "—" if v is None else "%.1f KiB" % v,
              verdict(v, 16.0, False)])
    out = ["### Targets", "",
           "pairmesh is the io_uring engine (the default); epoll in "
           "parentheses. Verdicts use medians.", ""]
    out += table(["target", "measured", "verdict"], t)
    if rows:
        out += ["", "io_uring ÷ epoll per row (latency: epoll p50 ÷ "
                "io_uring p50, so above 1 means io_uring is better "
                "everywhere):", ""]
        out += table(["row", "io_uring ÷ epoll"],
                     [[n, rx(v)] for n, v in rows])
    return out, t


def section(res, args):
    sizes = sorted({r.get("size") for r in res.ok
                    if r.get("scenario") == "throughput"} - {None})
    commit = sh("git rev-parse --short HEAD") or "unknown"
    if sh("git status --porcelain --untracked-files=no"):
        commit += " (plus uncommitted changes in the working tree)"
    kind = "quick run (`make bench-quick`)" if args.quick == "1" else \
        "full run (`make bench`)"
    out = [BEGIN,
           "## Results",
           "",
           "Generated by `bench/report.py` from `build/bench/results.jsonl`; "
           "do not edit by hand between the bench markers.",
           "",
           "- **Run:** %s, %s repetition(s) of %s s per row, interleaved."
           % (kind, args.reps, args.seconds),
           "- **Date:** %s" % (args.started or sh("date -u '+%Y-%m-%d "
                                                     "%H:%M UTC'")),
           "- **Kernel:** %s" % platform.release(),
           "- **CPU:** %d × %s" % (os.cpu_count() or 0, cpu_model()),
           "- **Commit:** %s" % commit,
           "- **Runs:** %d, %d failed" % (len(res.rows), len(res.failed)),
           ""]
    tg, trows = targets(res, sizes)
    out += tg
    out += [""] + throughput(res, sizes)
    out += [""] + latency(res)
    out += pm_only(res)
    if res.failed:
        out += ["", "### Failed runs", ""]
        out += ["- `%s`: %s" % (r.get("cmd", "?"),
                                 r.get("error") or r.get("fail"))
                for r in res.failed]
    cmds = []
    for r in res.rows:
        c = r.get("cmd")
        if c and c not in cmds:
            cmds.append(c)
    out += ["", "<details><summary>The exact commands (%d, each run %s "
            "time(s), in first-run order)</summary>" % (len(cmds), args.reps),
            "", "```sh"] + cmds + ["```", "", "</details>", END]
    return "\n".join(out) + "\n", trows


def splice(perf, text):
    try:
        with open(perf, encoding="utf-8") as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    b, e = old.find(BEGIN), old.find(END)
    if b >= 0 and e > b:
        new = old[:b] + text.rstrip("\n") + old[e + len(END):]
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + text
    tmp = perf + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, perf)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iperf3", nargs=2, metavar=("FILE", "SIZE"))
    ap.add_argument("--results")
    ap.add_argument("--perf")
    ap.add_argument("--out")
    ap.add_argument("--started", default="")
    ap.add_argument("--quick", default="0")
    ap.add_argument("--reps", default="?")
    ap.add_argument("--seconds", default="?")
    args = ap.parse_args()
    if args.iperf3:
        return iperf3_line(args.iperf3[0], int(args.iperf3[1]))
    if not args.results:
        ap.error("--results or --iperf3 is required")
    res = Results(load(args.results))
    text, trows = section(res, args)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    if args.perf:
        splice(args.perf, text)
    for name, measured, v in trows:
        print("%-42s %-44s %s" % (name, measured, v.replace("**", "")),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
