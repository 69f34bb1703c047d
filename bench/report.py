#!/usr/bin/env python3
"""Writes docs/benchmarks.md from the JSON files ci/bench collected (one per scenario and module).

usage: report.py RESULTS_DIR OUT_MD
Only measured figures appear: a scenario or a module that did not run is said to be missing.
"""
import glob
import json
import math
import os
import sys

res_dir, out = sys.argv[1], sys.argv[2]
env = {}
for line in open(os.path.join(res_dir, "machine.env")):
    k, _, v = line.rstrip("\n").partition("=")
    env[k] = v

def lock_holds(text):
    """From a push_stream_metrics scrape: (longest zone lock hold in ms over the workers,
    the hold in ms below which 99 % of the operations fell (a bucket bound), operations)."""
    longest, buckets = 0.0, {}
    for line in text.splitlines():
        if line.startswith("push_stream_zone_lock_hold_max_seconds{"):
            longest = max(longest, float(line.rsplit(" ", 1)[1]))
        elif line.startswith("push_stream_zone_lock_hold_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bound = math.inf if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0) + float(line.rsplit(" ", 1)[1])
    total = buckets.get(math.inf, 0)
    p99 = next((b for b in sorted(buckets) if total and buckets[b] >= 0.99 * total), None)
    return longest * 1000, (p99 * 1000 if p99 is not None else None), total


R = {}
for p in sorted(glob.glob(os.path.join(res_dir, "*.json"))):
    if p.endswith(".watch.json"):
        continue  # read below, with its run
    name, kind = os.path.basename(p)[:-5].split("--")
    R.setdefault(name, {})[kind] = json.load(open(p))
    ep = p[:-5] + ".errors"
    R[name][kind]["_log_errors"] = int(open(ep).read().strip() or 0) if os.path.exists(ep) else None
    bp = p[:-5] + ".broker"
    if os.path.exists(bp):
        u0, s0, u1, s1 = (float(x) for x in open(bp).read().split())
        R[name][kind]["_broker_cpu"] = (u1 - u0, s1 - s0)
    wp = p[:-5] + ".watch.json"
    if os.path.exists(wp):
        R[name][kind]["_watch"] = json.load(open(wp))
    mp = p[:-5] + ".metrics"
    if os.path.exists(mp):
        R[name][kind]["_lock"] = lock_holds(open(mp).read())


def num(x, fmt="{:,.0f}"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return fmt.format(x)


def ms(x):
    return num(x, "{:,.1f}") if x is not None and x >= 10 else num(x, "{:,.2f}")


def ratio(a, b, fmt="{:.2f}×"):
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
        return "–"
    return fmt.format(a / b)


def us_per_delivery(step, key):
    d = step.get("delivered") or 0
    return step[key] * 1e6 / d if d else None


def step_rows(st):
    lat = st["latency"]
    return [
        ("rate asked (msg/s)", num(st["rate"])),
        ("published (failed)", f'{num(st["published"])} ({num(st["publish_failed"])})'),
        ("published/s achieved", num(st["published_per_s"])),
        ("expected deliveries", num(st["expected"])),
        ("delivered", num(st["delivered"])),
        ("lost", num(st["lost"])),
        ("duplicates", num(st["duplicates"])),
        ("deliveries/s", num(st["deliveries_per_s"])),
        ("latency p50 (ms)", ms(lat["p50_ms"])),
        ("latency p90 (ms)", ms(lat["p90_ms"])),
        ("latency p99 (ms)", ms(lat["p99_ms"])),
        ("latency p99.9 (ms)", ms(lat["p999_ms"])),
        ("latency max (ms)", ms(lat["max_ms"])),
        ("publish round trip p99 (ms)", ms(st["publish_rtt"]["p99_ms"])),
        ("subscribers closed by the server", num(st["closed_subscribers"])),
        ("nginx CPU user / kernel (s)", f'{num(st["nginx_cpu_user_s"], "{:.2f}")} / {num(st["nginx_cpu_sys_s"], "{:.2f}")}'),
        ("nginx CPU per delivery user / kernel (µs)",
         f'{num(us_per_delivery(st, "nginx_cpu_user_s"), "{:.2f}")} / {num(us_per_delivery(st, "nginx_cpu_sys_s"), "{:.2f}")}'),
        ("load tool CPU user / kernel (s)", f'{num(st["tool_cpu_user_s"], "{:.2f}")} / {num(st["tool_cpu_sys_s"], "{:.2f}")}'),
    ]


def conn_rows(r):
    return [
        ("subscribers asked", num(r["subs"])),
        ("established / failed", f'{num(r["connected"])} / {num(r["failed"])}'),
        ("connect time (s) / conn/s", f'{num(r["connect_secs"], "{:.2f}")} / {num(r["conn_per_s"])}'),
        ("nginx CPU while connecting user / kernel (s)",
         f'{num(r["nginx_cpu_connect_user_s"], "{:.2f}")} / {num(r["nginx_cpu_connect_sys_s"], "{:.2f}")}'),
        ("nginx RSS / PSS before (MiB)", f'{num(r["nginx_rss_kb_before"]/1024, "{:.1f}")} / {num(r["nginx_pss_kb_before"]/1024, "{:.1f}")}'),
        ("nginx RSS / PSS idle, all connected (MiB)", f'{num(r["nginx_rss_kb_idle"]/1024, "{:.1f}")} / {num(r["nginx_pss_kb_idle"]/1024, "{:.1f}")}'),
        ("RSS per connection (bytes)", num(r["rss_bytes_per_conn"])),
        ("PSS per connection (bytes)", num(r["pss_bytes_per_conn"])),
        ("[alert]/[crit]/[emerg] lines in error.log", num(r.get("_log_errors"))),
        ("zone lock: longest hold / 99 % of holds within (ms), operations",
         f'{ms(r["_lock"][0])} / ≤ {num(r["_lock"][1], "{:g}")}, {num(r["_lock"][2])}' if r.get("_lock") else "–"),
    ]


def table(kinds, runs):
    """kinds: column names; runs: list of row lists (same labels)."""
    lines = ["| | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for i, (label, _) in enumerate(runs[0]):
        lines.append(f"| {label} | " + " | ".join(r[i][1] for r in runs) + " |")
    return "\n".join(lines)


def scenario_block(name, title, kinds=("ours", "ours-detached", "nchan")):
    rs = R.get(name, {})
    have = [k for k in kinds if k in rs]
    md = [f"### {title}", ""]
    if not have:
        md += ["Not run in this measurement.", ""]
        return md, None
    missing = [k for k in kinds if k not in rs]
    if missing:
        md += [f"Missing: {', '.join(missing)} (not run).", ""]
    r0 = rs[have[0]]
    md += [f"{r0['mode']}, {num(r0['subs'])} subscribers over {num(r0['channels'])} channel(s), "
           f"{r0['procs']} client processes.", ""]
    md += [table(have, [conn_rows(rs[k]) for k in have]), ""]
    nsteps = max(len(rs[k]["steps"]) for k in have)
    for i in range(nsteps):
        cols = [k for k in have if i < len(rs[k]["steps"])]
        md += [f"Step {i + 1}:", "", table(cols, [step_rows(rs[k]["steps"][i]) for k in cols]), ""]
    return md, rs


def best_sustained(r, p99_max=100.0):
    best = None
    for st in r["steps"]:
        if st["lost"] == 0 and st["latency"]["p99_ms"] is not None and not math.isnan(st["latency"]["p99_ms"]) \
                and st["latency"]["p99_ms"] <= p99_max:
            if best is None or st["deliveries_per_s"] > best["deliveries_per_s"]:
                best = st
    return best


def verdict(ok):
    return "met" if ok else "**missed**"


targets = []  # (scenario, target, ours, nchan, verdict)


def cpu_targets(scn, o, n):
    if not o or not n:
        return
    ou = us_per_delivery(o, "nginx_cpu_user_s"); ok_ = us_per_delivery(o, "nginx_cpu_sys_s")
    nu = us_per_delivery(n, "nginx_cpu_user_s"); nk = us_per_delivery(n, "nginx_cpu_sys_s")
    if None in (ou, ok_, nu, nk):
        return
    targets.append((scn, "server CPU per delivery ≤ Nchan's", f"{ou + ok_:.2f} µs", f"{nu + nk:.2f} µs", verdict(ou + ok_ <= nu + nk)))
    targets.append((scn, "user CPU per delivery ≤ ½ Nchan's", f"{ou:.2f} µs", f"{nu:.2f} µs", verdict(ou <= nu / 2)))


md = []
md += [
    "# Benchmarks: ngx-push-stream against Nchan",
    "",
    "Written by `ci/bench` (the load tool is `bench/`, a tokio client; configurations in "
    "`bench/configs/`). Every figure below was measured in the run described here; a scenario "
    "that did not run says so. Both modules run in Debian's nginx, each on a freshly started "
    "nginx with the same worker count, driven by the same client on the same cores.",
    "",
    "## Machine and versions",
    "",
    f"- date: {env.get('date')}",
    f"- machine: {env.get('os')}, kernel {env.get('kernel')}, {env.get('cpu')}, {env.get('cores')} cores, {env.get('mem')}, loopback only",
    f"- load average when the report was written: {env.get('load')} (the 2 cores are shared with other work: absolute figures drift; compare the two modules side by side)",
    f"- nginx {env.get('nginx')} (Debian), nginx workers: {env.get('workers')} (scenario 5: {env.get('workers_big')})",
    f"- ngx-push-stream {env.get('ours')}, release build from `ci/build`",
    f"- Nchan (libnginx-mod-nchan) {env.get('nchan')}",
    f"- RabbitMQ {env.get('rabbitmq')}",
    f"- {env.get('rustc')}",
    "",
    "Command:",
    "",
    "```sh",
    *(open(os.path.join(res_dir, "commands")).read().strip().splitlines() if os.path.exists(os.path.join(res_dir, "commands")) else [env.get("command", "ci/bench")]),
    "```",
    "",
    "How it measures: subscribers connect from source addresses spread over 127.0.0.0/8 (bind "
    "before connect), split over several single-threaded client processes (at least 4, the same "
    "for both modules; the open-files limit is 20 000 per "
    "process); once all are connected, the publisher POSTs `R` msg/s over keep-alive HTTP "
    "connections (`/pub?id=CH`, paced, round-robin over the channels) for `T` s, then waits a "
    "drain time. Each body carries `PSB<channel>.<seq>.<unix-ns>;`: latency is receive time minus "
    "that send time (HDR histogram, µs), duplicates are a sequence seen twice by one subscriber, "
    "expected = Σ over channels of (accepted publishes × subscribers connected to it), lost = "
    "expected − distinct deliveries. nginx CPU is utime/stime of the master and workers from "
    "`/proc/<pid>/stat` over the publishing window plus drain; memory is the sum of `Rss`/`Pss` of "
    "`/proc/<pid>/smaps_rollup` over master and workers, idle with everyone connected minus before "
    "the first connection, divided by the established connections. The load tool's CPU is its own "
    "getrusage (client processes and publisher).",
    "",
]

body = []
# Scenario 1
b, rs = scenario_block("s1", "Scenario 1: fan-out, EventSource subscribers on 1 channel")
body += b
if rs and "ours" in rs:
    o = rs["ours"]["steps"]; n = rs.get("nchan", {}).get("steps", [])
    if o:
        st = o[0]
        targets.append(("1", f"{num(st['rate'])} msg/s: p99 ≤ 40 ms, 0 lost", f"p99 {ms(st['latency']['p99_ms'])} ms, lost {st['lost']}",
                        f"p99 {ms(n[0]['latency']['p99_ms'])} ms, lost {n[0]['lost']}" if n else "–",
                        verdict(st["latency"]["p99_ms"] <= 40 and st["lost"] == 0)))
        cpu_targets("1", st, n[0] if n else None)
    if len(o) > 1 and len(n) > 1:
        st, ns = o[1], n[1]
        ok = st["deliveries_per_s"] >= 2 * ns["deliveries_per_s"] and st["lost"] == 0 and st["latency"]["p99_ms"] < 1000
        targets.append(("1", f"{num(st['rate'])} msg/s: deliveries/s ≥ 2× Nchan's, 0 lost, p99 < 1 s",
                        f"{num(st['deliveries_per_s'])}/s, lost {st['lost']}, p99 {ms(st['latency']['p99_ms'])} ms",
                        f"{num(ns['deliveries_per_s'])}/s, lost {ns['lost']}, p99 {ms(ns['latency']['p99_ms'])} ms", verdict(ok)))
        cpu_targets("1", st, ns)
# Scenario 2
b, rs = scenario_block("s2", "Scenario 2: many channels")
body += b
if rs and "ours" in rs and "nchan" in rs and rs["ours"]["steps"] and rs["nchan"]["steps"]:
    st, ns = rs["ours"]["steps"][0], rs["nchan"]["steps"][0]
    targets.append(("2", "p99 ≤ Nchan's, 0 lost", f"p99 {ms(st['latency']['p99_ms'])} ms, lost {st['lost']}",
                    f"p99 {ms(ns['latency']['p99_ms'])} ms, lost {ns['lost']}",
                    verdict(st["latency"]["p99_ms"] <= ns["latency"]["p99_ms"] and st["lost"] == 0)))
    cpu_targets("2", st, ns)
# Scenario 3
b, rs = scenario_block("s3", "Scenario 3: throughput, rate raised until p99 > 100 ms or a loss")
body += b
if rs:
    line = []
    best = {}
    for k in ("ours", "nchan"):
        if k in rs:
            best[k] = best_sustained(rs[k])
            bs = best[k]
            line.append(f"- {k}: highest sustained (0 lost, p99 ≤ 100 ms): " +
                        (f"{num(bs['deliveries_per_s'])} deliveries/s at {num(bs['rate'])} msg/s (p99 {ms(bs['latency']['p99_ms'])} ms)" if bs else "none of the steps"))
    body += line + [""]
    if best.get("ours") and best.get("nchan"):
        o, n = best["ours"], best["nchan"]
        targets.append(("3", "sustained deliveries/s ≥ 2× Nchan's", f"{num(o['deliveries_per_s'])}/s", f"{num(n['deliveries_per_s'])}/s",
                        verdict(o["deliveries_per_s"] >= 2 * n["deliveries_per_s"])))
        cpu_targets("3", o, n)
# Scenario 4
S4 = (("s4es", "EventSource"), ("s4ws", "WebSocket"), ("s4st", "streaming"), ("s4lp", "long-polling"))
for nm, what in S4:
    b, rs = scenario_block(nm, f"Scenario 4: memory per idle {what} subscriber")
    body += b
    if rs and ("ours" in rs or "ours-detached" in rs):
        n = rs.get("nchan")
        # a Nchan run whose nginx logged alerts (workers killed) is no reference
        nref = n if n and not n.get("_log_errors") else None
        if nm != "s4lp" and "ours" in rs:  # long-polling: measured and reported only
            o = rs["ours"]
            targets.append(("4", f"{o['mode']}: ≤ 5 KiB (5 120 bytes) RSS per idle subscriber (`ours`, default configuration)",
                            f"{num(o['rss_bytes_per_conn'])} B", f"{num(n['rss_bytes_per_conn'])} B" if n else "–",
                            verdict(o["rss_bytes_per_conn"] <= 5120)))
        if nm != "s4lp":
            k = "ours-detached" if "ours-detached" in rs else "ours"
            o = rs[k]
            targets.append(("4", f"{o['mode']}: ≤ 2 048 B RSS per idle subscriber and ≤ 0.2× Nchan's (issue 18, `{k}`)",
                            f"{num(o['rss_bytes_per_conn'])} B", f"{num(n['rss_bytes_per_conn'])} B" + ("" if nref else " (not comparable)") if n else "–",
                            verdict(o["rss_bytes_per_conn"] <= 2048 and (nref is None or o["rss_bytes_per_conn"] <= 0.2 * nref["rss_bytes_per_conn"]))))
        for k in ("ours", "ours-detached"):
            if k in rs and nref:
                o = rs[k]
                targets.append(("4", f"{o['mode']}: connect rate ≥ Nchan's (issue 18, `{k}`)",
                                f"{num(o['conn_per_s'])}/s", f"{num(nref['conn_per_s'])}/s",
                                verdict(o["conn_per_s"] >= nref["conn_per_s"])))
# Scenario 5
b, rs = scenario_block("s5", "Scenario 5: scale, EventSource subscribers on this box")
body += b
if rs and "ours" in rs:
    o = rs["ours"]; n = rs.get("nchan")
    lost = sum(s["lost"] for s in o["steps"])
    ok = o["connected"] == o["subs"] and lost == 0 and (n is None or o["conn_per_s"] >= n["conn_per_s"])
    targets.append(("5", f"{num(o['subs'])} held, 0 lost, conn/s ≥ Nchan's",
                    f"{num(o['connected'])} held, lost {lost}, {num(o['conn_per_s'])} conn/s",
                    f"{num(n['connected'])} held, lost {sum(s['lost'] for s in n['steps'])}, {num(n['conn_per_s'])} conn/s" if n else "–",
                    verdict(ok)))
# Scenario 7 (opt-in): only reported when it ran
def s7_rows(r):
    rows = [
        ("stopped for memory (subscribers not tried)", num(r.get("skipped_for_memory"))),
        ("kernel slab per connection (bytes, /proc/meminfo Slab)", num(r.get("slab_bytes_per_conn"))),
        ("load tool RSS per connection (bytes, all its processes)", num(r.get("tool_rss_bytes_per_conn"))),
        ("machine's lowest available memory over the run (MiB)", num(r.get("mem_available_min_kb", 0) / 1024)),
        ("machine memory per subscriber at the peak (bytes: nginx, kernel and load tool)", num(r.get("machine_bytes_per_conn"))),
    ]
    for shot in r.get("oneshot", []):
        what = shot["what"]
        rows += [
            (f"{what}: published / refused", f'{num(shot["published"])} / {num(shot["publish_refused"])}'
             + (" (a publish got no answer within the wait: publishing stopped)" if shot.get("publish_unanswered") else "")),
            (f"{what}: delivered / expected, lost", f'{num(shot["delivered"])} / {num(shot["expected"])}, {num(shot["lost"])}'),
            (f"{what}: time until the last subscriber had it (s)", num(shot["secs_until_last"], "{:.2f}")),
            (f"{what}: latency p50 / p99 / max (ms)",
             f'{ms(shot["latency"]["p50_ms"])} / {ms(shot["latency"]["p99_ms"])} / {ms(shot["latency"]["max_ms"])}'),
            (f"{what}: nginx CPU user / kernel (s)", f'{num(shot["nginx_cpu_user_s"], "{:.2f}")} / {num(shot["nginx_cpu_sys_s"], "{:.2f}")}'),
        ]
    return rows


if "s7" in R:
    rs = R["s7"]
    have = [k for k in ("ours", "ours-detached", "nchan") if k in rs]
    r0 = rs[have[0]]
    body += ["### Scenario 7: a million EventSource subscribers on this box", "",
             f"{num(r0['subs'])} subscribers asked, each on its own channel (one of {num(r0['channels'])}) and on one "
             f"channel all of them listen to, {r0['procs']} client processes over source addresses in 127.0.0.0/8; "
             f"no new connection once the machine has less than {num(r0.get('min_free_mb'))} MiB available. "
             "Then one message to the channel all of them listen to, then one message to each channel.", "",
             table(have, [conn_rows(rs[k]) + s7_rows(rs[k]) for k in have]), ""]
    k7 = "ours-detached" if "ours-detached" in rs else "ours"
    o = rs.get(k7); n = rs.get("nchan")
    if o:
        shots = o.get("oneshot", [])
        lost = sum(x["lost"] for x in shots)
        targets.append(("7", f"{num(o['subs'])} EventSource subscribers held, 0 lost",
                        f"{num(o['connected'])} held, lost {lost}",
                        f"{num(n['connected'])} held, lost {sum(x['lost'] for x in n.get('oneshot', []))}" if n else "–",
                        verdict(o["connected"] == o["subs"] and lost == 0 and bool(shots))))
        if n:
            targets.append(("7", f"connect rate ≥ Nchan's (`{k7}`)", f"{num(o['conn_per_s'])}/s",
                            f"{num(n['conn_per_s'])}/s", verdict(o["conn_per_s"] >= n["conn_per_s"])))
        targets.append(("7", f"RSS per idle subscriber ≤ 2 048 B (`{k7}`)",
                        f"{num(o['rss_bytes_per_conn'])} B", f"{num(n['rss_bytes_per_conn'])} B" if n else "–",
                        verdict(o["rss_bytes_per_conn"] <= 2048)))
# Scenario 6
b, rs = scenario_block("s6", "Scenario 6: scenario 2 fed from a RabbitMQ stream (ours only)",
                       kinds=("ours-amqp", "ours-amqp-host"))
body += b
if rs:
    body += ["Publishing path: the load tool publishes each message straight to the RabbitMQ stream "
             "(default exchange, `channel` header, publisher confirms, as an application would) → the "
             "stream → nginx → subscribers. `ours-amqp`: every nginx worker consumes the stream "
             "(`push_stream_amqp_consumer worker`, the default); `ours-amqp-host`: worker 0 consumes it "
             "for the host and the others deliver from the shared zone (`push_stream_amqp_consumer host`). "
             "Latency is from just before the AMQP publish to the subscriber's read: it includes "
             "RabbitMQ's own stream latency.", ""]
for kind in ("ours-amqp", "ours-amqp-host"):
    if not rs or kind not in rs or not rs[kind]["steps"]:
        continue
    st = rs[kind]["steps"][0]
    bc = rs[kind].get("_broker_cpu")
    if bc:
        body += [f"`{kind}`: RabbitMQ (beam.smp) CPU over the whole run, connecting included, on the same "
                 f"cores: user {bc[0]:.2f} s, kernel {bc[1]:.2f} s (nginx during the publishing window: user "
                 f"{st['nginx_cpu_user_s']:.2f} s, kernel {st['nginx_cpu_sys_s']:.2f} s).", ""]
    w = rs[kind].get("_watch")
    if w:
        wl = w["latency"]
        body += [f"`{kind}`: RabbitMQ alone in the same run: a plain consumer of the same stream in the load "
                 f"tool (`pushbench amqp-watch`, offset `next`, prefetch 1 000, acknowledgements in batches "
                 f"of 250, no nginx in its path) received {num(w['messages'])} messages "
                 f"({num(w['duplicates'])} duplicates) with AMQP publish → consumer latency p50 "
                 f"{ms(wl['p50_ms'])} ms, p90 {ms(wl['p90_ms'])} ms, p99 {ms(wl['p99_ms'])} ms, "
                 f"p99.9 {ms(wl['p999_ms'])} ms, max {ms(wl['max_ms'])} ms. The difference to the "
                 f"subscribers' figures is what nginx and the module add.", ""]
    targets.append(("6", f"AMQP → subscriber p99 ≤ 5 ms, 0 lost (`{kind}`)",
                    f"p99 {ms(st['latency']['p99_ms'])} ms, lost {st['lost']}", "(no AMQP)",
                    verdict(st["latency"]["p99_ms"] <= 5 and st["lost"] == 0)))

# Ratios summary
md += ["## Summary: ours against Nchan", "",
       "`ours`: the default configuration; `detached` (`ours-detached` in the details): the same with "
       "`push_stream_detached_subscribers on` (the request freed once the response head is out).", ""]
rows = ["| scenario | figure | ours | Nchan | ours / Nchan |", "|---|---|---|---|---|"]
for name, label0, ok in [(n_, l_, k_) for n_, l_ in (("s1", "1"), ("s2", "2"), ("s3", "3"), ("s5", "5"))
                         for k_ in ("ours", "ours-detached")]:
    rs = R.get(name, {})
    label = label0 if ok == "ours" else f"{label0}, detached"
    if ok in rs and "nchan" in rs:
        for i, (so, sn) in enumerate(zip(rs[ok]["steps"], rs["nchan"]["steps"])):
            tag = f"{label} @ {num(so['rate'])} msg/s"
            rows.append(f"| {tag} | deliveries/s | {num(so['deliveries_per_s'])} | {num(sn['deliveries_per_s'])} | {ratio(so['deliveries_per_s'], sn['deliveries_per_s'])} |")
            rows.append(f"| {tag} | lost / expected | {num(so['lost'])} / {num(so['expected'])} | {num(sn['lost'])} / {num(sn['expected'])} | |")
            rows.append(f"| {tag} | latency p99 (ms) | {ms(so['latency']['p99_ms'])} | {ms(sn['latency']['p99_ms'])} | {ratio(so['latency']['p99_ms'], sn['latency']['p99_ms'])} |")
            ou = us_per_delivery(so, "nginx_cpu_user_s"); ok_ = us_per_delivery(so, "nginx_cpu_sys_s")
            nu = us_per_delivery(sn, "nginx_cpu_user_s"); nk = us_per_delivery(sn, "nginx_cpu_sys_s")
            if None not in (ou, ok_, nu, nk):
                rows.append(f"| {tag} | nginx CPU per delivery user+kernel (µs) | {ou:.2f}+{ok_:.2f} | {nu:.2f}+{nk:.2f} | {ratio(ou + ok_, nu + nk)} |")
        rows.append(f"| {label} | conn/s | {num(rs[ok]['conn_per_s'])} | {num(rs['nchan']['conn_per_s'])} | {ratio(rs[ok]['conn_per_s'], rs['nchan']['conn_per_s'])} |")
for (name, _), ok in [(x, k_) for x in S4 for k_ in ("ours", "ours-detached")]:
    rs = R.get(name, {})
    if ok in rs and "nchan" in rs:
        o, n = rs[ok], rs["nchan"]
        def crashed(r):
            # a figure from a run whose nginx logged alerts (e.g. workers killed) is not comparable
            return f" ({r['_log_errors']} [alert]/[crit]/[emerg] lines: not comparable)" if r.get("_log_errors") else ""
        rows.append(f"| 4 ({o['mode']}, {num(o['connected'])} idle{', detached' if ok != 'ours' else ''}) | RSS / PSS per subscriber (bytes) | {num(o['rss_bytes_per_conn'])} / {num(o['pss_bytes_per_conn'])}{crashed(o)} | {num(n['rss_bytes_per_conn'])} / {num(n['pss_bytes_per_conn'])}{crashed(n)} | {ratio(o['rss_bytes_per_conn'], n['rss_bytes_per_conn'])} |")
md += rows + [""]

md += ["## Targets (issues 8 and 18)", ""]
if targets:
    md += ["| scenario | target | ours | Nchan | verdict |", "|---|---|---|---|---|"]
    md += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in targets]
else:
    md += ["No target could be evaluated from this run."]
md += [""]
ALL = (("s1", "1"), ("s2", "2"), ("s3", "3")) + tuple((s, f"4 ({w})") for s, w in S4) + (("s5", "5"), ("s6", "6"))
notrun = [s for s, t in ALL if s not in R]
if notrun:
    md += ["Not run in this measurement: scenario(s) " + ", ".join(t for s, t in ALL if s in notrun) + ".", ""]

md += ["## Details", ""] + body
notes = os.path.join(res_dir, "notes.md")
if os.path.exists(notes):
    md += ["## Notes", "", open(notes).read().strip(), ""]
open(out, "w").write("\n".join(md) + "\n")
