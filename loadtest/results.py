#!/usr/bin/env python3
"""Turns one compare.sh run (ghz JSON reports, pgbench's output, the load
tool's plots) into loadtest/RESULTS.md and loadtest/results/*.svg.

The seed's scenarios (names, slot, winners, the seed team's p95) come from
their one definition, loadtest/scenarios.json; `results.py --scenarios`
prints what compare.sh needs of it.

Only the standard library: it runs wherever compare.sh runs.
"""

import argparse
import datetime
import functools
import glob
import json
import math
import os
import platform
import re
import subprocess

DEFINITION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios.json")
SEED = "seed team"


def definition(path=DEFINITION):
    """The seed's scenarios: what this report and compare.sh use of them.

    Fails at once, naming the key, when the definition lacks one.
    """
    with open(path) as f:
        d = json.load(f)
    try:
        scenarios = [
            {
                "name": s["name"],
                "users": int(s["users"]),
                "clicks": int(s["clicks"]),
                "winners": int(s["winners"]),
                "seed_p95_s": float(s["seed_p95_s"]),
            }
            for s in d["scenarios"]
        ]
        seed = {
            "capacity": int(d["capacity"]),
            "party_size": int(d["party_size"]),
            "headline": d["headline"],
            "scenarios": scenarios,
            "by_name": {s["name"]: s for s in scenarios},
        }
    except KeyError as e:
        raise SystemExit(f"{path}: no {e} key") from None
    # The scenarios shown in plots and cross-checked with k6: the largest
    # (most users) of each click count.
    largest = {}
    for s in scenarios:
        if s["clicks"] not in largest or s["users"] > largest[s["clicks"]]["users"]:
            largest[s["clicks"]] = s
    seed["highlighted"] = [s["name"] for s in scenarios if largest[s["clicks"]] is s]
    return seed


def load(path):
    with open(path) as f:
        report = json.load(f)
    report.pop("details", None)
    return report


def percentile(report, p):
    for entry in report["latencyDistribution"]:
        if entry["percentage"] == p:
            return entry["latency"] / 1e6
    raise KeyError(f"no p{p} in {report.get('options', {}).get('name')}")


def ms(value):
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def ratio(a, b):
    return f"{a / b:.1f}x" if b else "n/a"


def figures(report):
    sg = report["slotgate"]
    return {
        "calls": report["count"],
        "p50": percentile(report, 50),
        "p95": percentile(report, 95),
        "p99": percentile(report, 99),
        "makespan": sg["makespan"] / 1e6,
        "rps": report["rps"],
        "ok": sg["outcomes"].get("OK", 0),
        "expected": sg.get("expected_winners"),
        "checks": sg["checks"],
        "exact": all(c["ok"] for c in sg["checks"]),
        "codes": report["statusCodeDistribution"],
        "name": report["options"].get("name", ""),
    }


def winners_cell(f, trivial):
    if trivial:
        return "n/a"
    mark = "exact" if f["exact"] else "WRONG"
    if f["expected"] is not None:
        return f"{f['ok']:,} of {f['expected']:,}, {mark}"
    return f"{f['ok']:,} booked, {mark}"


@functools.lru_cache(maxsize=None)
def median_run(work, prefix, scenario):
    runs = []
    for path in sorted(glob.glob(os.path.join(work, f"{prefix}.{scenario}.*.json"))):
        runs.append((figures(load(path)), path))
    if not runs:
        return None, []
    runs.sort(key=lambda r: r[0]["p95"])
    return runs[len(runs) // 2], [r[0] for r in runs]


def opening_figures(report):
    """A slot's opening (`slotgate-load --opens-in ... --early N`): the
    figures of its early calls, and when the burst left after the opening.
    None for a run without an opening."""
    o = report.get("slotgate", {}).get("opening")
    if not o:
        return None
    early = o.get("early") or {}
    count = early.get("count", 0)
    seconds = early.get("total", 0) / 1e9
    refused = early.get("not_open", 0)
    p95 = next((e["latency"] / 1e6 for e in early.get("latencyDistribution", []) if e["percentage"] == 95), None)
    return {
        "opens_in": o["opens_in"] / 1e9,
        "released": o["released_after_opening"] / 1e6,
        "early": count,
        "refused": refused,
        "refusals_per_s": refused / seconds if seconds else 0.0,
        "p95": p95,
        "hint_too_long": early.get("hint_too_long", 0),
        "hint_missing": early.get("hint_missing", 0),
        "slack_p50": (early.get("hint_slack_ms") or {}).get("p50"),
    }


def opening_section(work, gates, bursts):
    """RESULTS.md's section on a slot's opening: for each gate that ran it,
    the opening run (median p95) beside the plain run of the same scenario
    in the same compare.sh run. Empty when no opening ran."""
    rows = []
    about = None
    for scenario in bursts:
        for gate in gates:
            opening, every = median_run(work, f"{gate}.opening", scenario)
            if not opening:
                continue
            plain, plain_every = median_run(work, gate, scenario)
            o = opening_figures(load(opening[1]))
            about = about or (scenario, o)
            for f, runs, early in ((plain, plain_every, None), (opening, every, o)):
                if not f:
                    continue
                f = f[0]
                if early:
                    hints = ("within the time left" if not early["hint_too_long"] + early["hint_missing"]
                             else f"{early['hint_too_long']} longer, {early['hint_missing']} missing")
                    if early["slack_p50"] is not None and not early["hint_too_long"] + early["hint_missing"]:
                        hints += f" (median {early['slack_p50']:.0f} ms under)"
                    cells = (f"opening in {early['opens_in']:g} s", f"{early['early']:,}",
                             f"{early['refused']:,}", f"{early['refusals_per_s']:,.0f}",
                             ms(early["p95"]) if early["p95"] is not None else "n/a", hints,
                             ms(early["released"]))
                else:
                    cells = ("open from the start", "n/a", "n/a", "n/a", "n/a", "n/a", "n/a")
                rows.append(
                    f"| {scenario} | {label(gate)} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {cells[4]} | "
                    f"{cells[5]} | {winners_cell(f, False)} | {ms(f['p50'])} | {ms(f['p95'])} | {ms(f['makespan'])} | "
                    f"{cells[6]} | {f['rps']:,.0f} | {', '.join(ms(e['p95']) for e in runs)} |"
                )
    if not rows:
        return []
    scenario, o = about
    return [
        f"## A slot's opening: {scenario} at the instant the slot opens",
        "",
        f"`slotgate-load --scenario {scenario} --opens-in {o['opens_in']:g}s --early {o['early']}`: the slot is opened",
        f"with its sale window starting {o['opens_in']:g} s later. {o['early']:,} calls, each its own user, go into it",
        "while it is closed, spread evenly until 200 ms before the opening: each must be refused `SLOT_NOT_OPEN`",
        "with a `RetryInfo` no longer than the time that was left when it was sent. The scenario's calls are built",
        "beforehand and released at the opening instant. Beside each, the same scenario into a slot open from the",
        "start, from the same run. *Early refusals/s* is the rate they were offered at (spread over the wait), so",
        "it shows the gate kept pace; *released* is how long after `opens_at` the burst left; *makespan* is the",
        "opening burst's, first send to last answer. Each ran as often as the bursts; the run with the median",
        "p95 is shown.",
        "",
        "| scenario | path | slot | early calls | early refused SLOT_NOT_OPEN | early refusals/s | early p95 | RetryInfo "
        "| winners | p50 | p95 | makespan | released | calls/s | p95 of every run |",
        "|---|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
    ]


def waitlist_section(work, bursts):
    """RESULTS.md's section on the waitlist: each run of the scenario whose
    refused clicks join the slot's waitlist, then a cancel storm, beside the
    plain run of the same scenario that followed it in the same compare.sh
    run. Empty when none ran."""
    rows = []
    about = None
    for scenario in bursts:
        for path in sorted(glob.glob(os.path.join(work, f"redis.waitlist.{scenario}.*.json"))):
            r = path.rsplit(".", 2)[-2]
            report = load(path)
            w = report["slotgate"].get("waitlist") or {}
            storm = w.get("cancel_storm") or {}
            f = figures(report)
            about = about or scenario
            beside = os.path.join(work, f"redis.beside-waitlist.{scenario}.{r}.json")
            b = figures(load(beside)) if os.path.exists(beside) else None
            plain = f"{ms(b['p95'])} / {ms(b['makespan'])}" if b else "n/a"
            rows.append(
                f"| {scenario} | {r} | {winners_cell(f, False)} | {w.get('joined', 0):,} | {w.get('entries', 0):,} | "
                f"{ms(f['p50'])} | {ms(f['p95'])} | {ms(f['makespan'])} | {plain} | {storm.get('cancels', 0)} | "
                f"{ms(storm.get('took', 0) / 1e6)} | {storm.get('offers', 0)} | {storm.get('remaining', 0)} |"
            )
    if not rows:
        return []
    return [
        f"## The waitlist: {about} with every refused click joining",
        "",
        f"`slotgate-load --scenario {about} --join-waitlist --waitlist-limit N --cancel-storm` (`--gate redis`):",
        "every click refused `SOLD_OUT` joins the slot's waitlist at once, so each such call is two RPCs (the",
        "latency is both); then every winner cancels at once, and the freed seats must all be offered to the first",
        "in line, none left public. Beside each run, the plain scenario run right after it (p95 / makespan).",
        "",
        "| scenario | run | winners | joins answered OK | entries in line | p50 | p95 | makespan "
        "| plain p95 / makespan | cancels | cancel storm | offers | GetRemaining after |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def label(prefix):
    return "health Check (trivial RPC)" if prefix == "trivial" else f"--gate {prefix}"


def copy_plots(work, name, stem, out_dir, title):
    for kind in ("latency", "timeline"):
        src = os.path.join(work, f"plots-{name}", f"{name}-{kind}.svg")
        if not os.path.exists(src):
            continue
        with open(src) as f:
            svg = f.read().replace(f">{name}:", f">{title}:")
        with open(os.path.join(out_dir, f"{stem}-{kind}.svg"), "w") as f:
            f.write(svg)


def p95_chart(rows, scenarios, paths, colours):
    """Grouped bars of p95 per scenario, one bar per path, log scale."""
    width, height, left, bottom, top = 760, 360, 70, 70, 40
    plot_w, plot_h = width - left - 20, height - bottom - top
    values = [v for row in rows.values() for v in row.values() if v]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    y = lambda v: top + plot_h - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * plot_h
    group_w = plot_w / len(scenarios)
    bar_w = group_w * 0.8 / len(paths)
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="#fff"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">p95 latency by scenario (log scale)</text>',
    ]
    decade = lo
    while decade <= hi:
        yy = y(decade)
        svg.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + plot_w}" y2="{yy:.1f}" stroke="#ddd"/>')
        tick = f"{decade / 1000:g} s" if decade >= 1000 else f"{decade:g} ms"
        svg.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{tick}</text>')
        decade *= 10
    for g, scenario in enumerate(scenarios):
        x0 = left + g * group_w + group_w * 0.1
        for i, path in enumerate(paths):
            v = rows[scenario].get(path)
            if not v:
                continue
            x = x0 + i * bar_w
            svg.append(
                f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{bar_w - 2:.1f}" height="{top + plot_h - y(v):.1f}" '
                f'fill="{colours[i]}"><title>{path}, {scenario}: p95 {ms(v)}</title></rect>'
            )
        svg.append(
            f'<text x="{left + (g + 0.5) * group_w:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{scenario}</text>'
        )
    svg.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#000"/>')
    for i, path in enumerate(paths):
        x = left + i * (plot_w / len(paths))
        svg.append(f'<rect x="{x:.1f}" y="{height - 28}" width="12" height="12" fill="{colours[i]}"/>')
        svg.append(f'<text x="{x + 16:.1f}" y="{height - 18}">{path}</text>')
    svg.append("</svg>")
    return "\n".join(svg) + "\n"


def read_cpu(path):
    """A run's .cpu file (compare.sh's `cpu` before and after, and the clock
    tick rate): the ticks spent by the server, PostgreSQL, Redis and the whole
    machine, the seconds it took, and the tick rate; None if there is none."""
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        (server0, pg0, redis0, busy0, t0, server1, pg1, redis1, busy1, t1, hz) = [float(x) for x in fh.read().split()]
    return server1 - server0, pg1 - pg0, redis1 - redis0, busy1 - busy0, t1 - t0, hz


def cpu_cells(work, prefix, f):
    """CPU per call and the machine's busy share over a spread run."""
    cpu = read_cpu(os.path.join(work, f"{prefix}.cpu" if prefix == "pgbench" else f"{prefix}.spread.cpu"))
    if cpu is None:
        return "n/a | n/a"
    server, pg, redis, busy, took, hz = cpu
    per = lambda ticks: f"{ticks / hz * 1e3 / max(f['calls'], 1) * 1e3:.0f} µs"
    share = busy / hz / (took * (os.cpu_count() or 1))
    if prefix == "pgbench":
        # pgbench's backends start and exit inside the run, so /proc never
        # shows them: only the machine's total is known.
        return f"{per(busy)} all told (PostgreSQL and pgbench together) | {share:.0%}"
    return f"{per(server)}, {per(pg)}, {per(redis)}, {per(max(busy - server - pg - redis, 0))} | {share:.0%}"


def call_cpu(json_path, calls):
    """The server's and Redis's CPU per call (µs) over one run, from the
    run's .cpu file beside its report (compare.sh writes one per run); None
    if there is none."""
    cpu = read_cpu(os.path.splitext(json_path)[0] + ".cpu")
    if cpu is None:
        return None
    server, _pg, redis, _busy, _took, hz = cpu
    return server / hz * 1e6 / max(calls, 1), redis / hz * 1e6 / max(calls, 1)


def run_cpu(json_path, calls):
    """The server's and Redis's CPU per call over one run, as a cell."""
    cpu = call_cpu(json_path, calls)
    return "n/a" if cpu is None else f"{cpu[0]:.0f} + {cpu[1]:.0f} µs"


def median(values):
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def k6_runs(work, scenario, call):
    """Every k6 run of one scenario and call (compare.sh's
    k6.SCENARIO.CALL.R.json), as figures: calls, winners, unexpected codes,
    latency (ms), makespan (the longest virtual user's iteration, ms: each
    user connects and sends all its calls at once) and CPU per call."""
    runs = []
    for path in sorted(glob.glob(os.path.join(work, f"k6.{scenario}.{call}.*.json"))):
        with open(path) as fh:
            m = json.load(fh)["metrics"]
        d = m["grpc_req_duration"]
        calls = sum(m.get(k, {}).get("count", 0) for k in ("booked", "refused", "health_ok", "unexpected"))
        cpu = call_cpu(path, calls)
        runs.append({
            "path": path, "calls": int(calls), "booked": int(m.get("booked", {}).get("count", 0)),
            "unexpected": int(m.get("unexpected", {}).get("count", 0)),
            "p50": d["med"], "p95": d["p(95)"], "p99": d["p(99)"],
            "makespan": m["iteration_duration"]["max"],
            "cpu": None if cpu is None else cpu[0] + cpu[1],
        })
    return runs


def slotgate_load_runs(work, prefix, scenario):
    """Every slotgate-load run of one burst on one path, in run order, with
    its CPU per call (server + Redis, µs)."""
    runs = []
    for path in sorted(glob.glob(os.path.join(work, f"{prefix}.{scenario}.*.json"))):
        f = figures(load(path))
        cpu = call_cpu(path, f["calls"])
        f["cpu"] = None if cpu is None else cpu[0] + cpu[1]
        runs.append(f)
    return runs


def verdict(measured, target, higher_is_better=False, unit="x"):
    """Met, or by how much the target is missed."""
    if measured is None:
        return "not measured"
    if (measured >= target) if higher_is_better else (measured <= target):
        return "**met**"
    by = (target - measured) / target if higher_is_better else measured / target - 1
    return f"missed by {by:.0%}"


def targets_section(work, gate, pg, spread_slots, rates, profile):
    """The refusal path's targets against the health call, each from this
    run, met or missed by how much."""
    md = []
    w = md.append
    rows = []
    fmt_ratio = lambda v: "n/a" if v is None else f"{v:.2f}x"
    every = lambda pairs: ", ".join(f"{a:.2f}x" for a in pairs) or "n/a"

    def ratio_of(ours, floor, key):
        a = median([r[key] for r in ours if r.get(key) is not None])
        b = median([r[key] for r in floor if r.get(key) is not None])
        pairs = [x[key] / y[key] for x, y in zip(ours, floor) if x.get(key) and y.get(key)]
        return (a / b if a is not None and b else None), pairs, a, b

    for tool, ours, floor in (
        ("slotgate-load", slotgate_load_runs(work, gate, "duplicate-2000"), slotgate_load_runs(work, "trivial", "duplicate-2000")),
        ("k6", k6_runs(work, "duplicate-2000", "create"), k6_runs(work, "duplicate-2000", "health")),
    ):
        for key, what, unit in (("cpu", "server + Redis CPU per call", "µs"), ("makespan", "makespan", "ms")):
            r, pairs, a, b = ratio_of(ours, floor, key)
            shown = "n/a" if a is None or b is None else (
                f"{a:.0f} against {b:.0f} µs" if unit == "µs" else f"{ms(a)} against {ms(b)}")
            rows.append((f"duplicate-2000, {what} ({tool}, {len(ours)} runs interleaved with {len(floor)})",
                         "≤ 1.25x health", f"{fmt_ratio(r)} ({shown}, medians)", every(pairs), verdict(r, 1.25)))
    chosen = median_run(work, gate, "burst-800")[0]
    floor = median_run(work, "trivial", "burst-800")[0]
    r = chosen[0]["p95"] / floor[0]["p95"] if chosen and floor else None
    rows.append(("burst-800 p95", "≤ 1.5x health",
                 "n/a" if r is None else f"{r:.2f}x ({ms(chosen[0]['p95'])} against {ms(floor[0]['p95'])}, median runs)",
                 "", verdict(r, 1.5)))
    spread = os.path.join(work, f"{gate}.spread.json")
    if os.path.exists(spread):
        f = figures(load(spread))
        cpu = call_cpu(spread, f["calls"])
        rows.append(("a winner's server CPU (spread)", "≤ 125 µs",
                     "n/a" if cpu is None else f"{cpu[0]:.0f} µs", "", verdict(cpu and cpu[0], 125)))
        commits = f["ok"] / (f["makespan"] / 1000)
        share = commits / pg["tps"]
        rows.append((f"winners/s over {spread_slots:,} slots against pgbench", "≥ 85%",
                     f"{share:.0%} ({commits:,.0f} against {pg['tps']:,.0f}/s)", "", verdict(share, 0.85, True)))
    for rate in rates:
        if rate != "1000":
            continue
        path = os.path.join(work, f"{gate}.soak-{rate}.json")
        if os.path.exists(path):
            f = figures(load(path))
            rows.append((f"open loop at {rate} calls/s, p99", "≤ 5 ms", ms(f["p99"]), "", verdict(f["p99"], 5.0)))
    w("## Targets: refusals at the gRPC floor")
    w("")
    w(f"Each against the health `Check` in the same shape on the same `--gate {gate}` server, from this run.")
    w("The duplicate-2000 runs of each tool alternate with its health runs; the ratio is of the medians,")
    w("and *every pair* lists each run's ratio to the health run after it. CPU is the server's plus")
    w("Redis's, from `/proc` (ticks of 10 ms).")
    w("")
    w("| target | goal | measured | every pair | |")
    w("|---|---|---|---|---|")
    for row in rows:
        w("| " + " | ".join(row) + " |")
    w("")
    if profile and os.path.exists(profile):
        with open(profile) as fh:
            md.extend(line.rstrip("\n") for line in fh)
        w("")
    return md


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            memory = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass

    def run(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    pg = run("psql", "-h", os.environ.get("PGHOST", "127.0.0.1"), "-U", "postgres", "-d", "postgres", "-tAc",
             "SHOW server_version")
    redis = re.search(r"redis_version:(\S+)", run("redis-cli", "INFO", "server"))
    return (
        f"{os.cpu_count()} cores ({cpu}){memory}, {platform.system()} {platform.release()}; "
        f"PostgreSQL {pg.split()[0] if pg else '?'}, Redis {redis.group(1) if redis else '?'}; "
        f"client, server, PostgreSQL and Redis all on this one machine"
    )


def pgbench(work):
    with open(os.path.join(work, "pgbench.txt")) as f:
        text = f.read()
    tps = float(re.search(r"^tps = ([\d.]+)", text, re.M).group(1))
    latency = float(re.search(r"^latency average = ([\d.]+) ms", text, re.M).group(1))
    done = int(re.search(r"number of transactions actually processed: (\d+)", text).group(1))
    return {"tps": tps, "latency": latency, "transactions": done}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenarios", action="store_true",
                    help="print, for compare.sh, the seed's capacity and party size, every scenario's name, "
                         "the highlighted ones (plotted, cross-checked with k6), and the headline one (also fired "
                         "at a slot's opening), one line each, and exit")
    ap.add_argument("--work")
    ap.add_argument("--out")
    ap.add_argument("--strategies")
    ap.add_argument("--bursts", help="the seed's scenarios that ran (default: all)")
    ap.add_argument("--rates")
    ap.add_argument("--pool")
    ap.add_argument("--soak")
    ap.add_argument("--spread-slots", type=int, default=1000)
    a = ap.parse_args()
    seed = definition()
    if a.scenarios:
        print(seed["capacity"], seed["party_size"])
        print(" ".join(s["name"] for s in seed["scenarios"]))
        print(" ".join(seed["highlighted"]))
        print(seed["headline"])
        return
    missing = [f"--{k}" for k in ("work", "out", "strategies", "rates", "pool", "soak") if getattr(a, k) is None]
    if missing:
        ap.error(f"{', '.join(missing)} required")
    gates = a.strategies.split()
    bursts = a.bursts.split() if a.bursts else [s["name"] for s in seed["scenarios"]]
    unknown = [b for b in bursts if b not in seed["by_name"]]
    if unknown:
        ap.error(f"--bursts: {', '.join(unknown)} not in {DEFINITION}")
    rates = a.rates.split()
    capacity, party = seed["capacity"], seed["party_size"]
    plotted = [b for b in bursts if b in seed["highlighted"]] + ["spread"]
    spread_slots = a.spread_slots
    spread_parties = spread_slots * max(capacity // party, 1)
    plots = os.path.join(a.out, "results")
    # Only this report's own plots are replaced: profile.sh's flame graphs
    # and summary live in the same folder.
    os.makedirs(plots, exist_ok=True)
    for old in glob.glob(os.path.join(plots, "*-latency.svg")) + glob.glob(os.path.join(plots, "*-timeline.svg")):
        os.remove(old)

    short = lambda prefix: "trivial RPC" if prefix == "trivial" else prefix
    paths = ["trivial"] + gates
    md = []
    w = md.append
    w("# slotgate: strategies side by side")
    w("")
    # When the run ended (pgbench is its last step), not when this report
    # was written: a report may be written again from a kept run.
    ended = datetime.datetime.fromtimestamp(os.path.getmtime(os.path.join(a.work, "pgbench.txt")), datetime.timezone.utc)
    w(f"Measured by `loadtest/compare.sh` on {ended:%Y-%m-%d %H:%M} UTC.")
    w(f"Machine: {machine()}.")
    w("")
    w("Every figure comes from one run of `compare.sh`: `slotgate-load` (release) against a private release")
    w(f"slotgate per strategy, PostgreSQL pool of {a.pool} connections, fresh database, fresh Redis namespace.")
    w("The pool, Redis reply and request timeouts are raised to 120 s for these runs, so every call waits")
    w("for its real answer instead of being shed by the overload guards. The server's trivial RPC (health")
    w("`Check`), fired by the same tool in the same shapes, is what gRPC alone costs on this machine.")
    w("")
    w("How to read the ratios: *p95 / trivial* is the p95 over the trivial RPC's p95 in the same shape (1.0x")
    w("would be free); *p95 / redis* compares a strategy with the product's gate; *seed / p95* is how many")
    w("times faster than the seed team's reported p95 for the same scenario (their version 1 for the")
    w("bursts, their best version 3 for duplicate-2000, whose 8,000 requests included 2,000 logins).")
    w("")

    # --- targets --------------------------------------------------------
    pg = pgbench(a.work)
    md.extend(targets_section(a.work, gates[0], pg, spread_slots, rates,
                              os.path.join(os.path.dirname(os.path.abspath(__file__)), "where-the-time-goes.md")))

    # --- bursts ---------------------------------------------------------
    w(f"## The seed's bursts (one slot, {capacity} seats, parties of {party}, every call at once)")
    w("")
    repeats = len(glob.glob(os.path.join(a.work, f"{gates[0]}.{bursts[0]}.*.json")))
    w(f"Each scenario ran {repeats} times per path; the run with the median p95 is shown, with every run's p95 (lowest first).")
    w("*Makespan* is first send to last answer: with thousands of calls at one instant, the honest burst figure.")
    w("")
    w("*CPU per call* is the server's plus Redis's, over the whole run (from /proc; ticks of 10 ms, so a run")
    w("of a few hundred ms is coarse).")
    w("")
    w("| scenario | path | calls | winners | p50 | p95 | p99 | makespan | calls/s | CPU per call (server + Redis) | p95 / trivial | p95 / redis | seed / p95 | p95 of every run |")
    w("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    chart = {}
    headline = []
    for scenario in bursts:
        chart[scenario] = {}
        trivial = median_run(a.work, "trivial", scenario)[0]
        redis = median_run(a.work, "redis", scenario)[0]
        for prefix in paths:
            chosen, every = median_run(a.work, prefix, scenario)
            if not chosen:
                continue
            f, path = chosen
            chart[scenario][short(prefix)] = f["p95"]
            row = (
                f"| {scenario} | {label(prefix)} | {f['calls']:,} | {winners_cell(f, prefix == 'trivial')} | "
                f"{ms(f['p50'])} | {ms(f['p95'])} | {ms(f['p99'])} | {ms(f['makespan'])} | {f['rps']:,.0f} | "
                f"{run_cpu(path, f['calls'])} | "
                f"{ratio(f['p95'], trivial[0]['p95']) if trivial else 'n/a'} | "
                f"{ratio(f['p95'], redis[0]['p95']) if redis and prefix != 'trivial' else 'n/a'} | "
                f"{ratio(seed['by_name'][scenario]['seed_p95_s'] * 1000, f['p95']) if prefix != 'trivial' else 'n/a'} | "
                f"{', '.join(ms(e['p95']) for e in every)} |"
            )
            w(row)
            if scenario == seed["headline"] and prefix != "trivial":
                headline.append(row)
            if scenario in plotted:
                name = os.path.splitext(os.path.basename(path))[0]
                copy_plots(a.work, name, f"{prefix}-{scenario}", plots, f"{label(prefix)}, {scenario}")
        chart[scenario][SEED] = seed["by_name"][scenario]["seed_p95_s"] * 1000
    w("")
    chart_paths = [short(p) for p in paths] + [SEED]
    colours = ["#999999", "#3b6fb6", "#e08a2c", "#c0392b", "#6b4c9a", "#444444"][: len(chart_paths) - 1] + ["#222222"]
    with open(os.path.join(plots, "p95-by-scenario.svg"), "w") as f:
        f.write(p95_chart(chart, bursts, chart_paths, colours))
    w("![p95 by scenario](results/p95-by-scenario.svg)")
    w("")
    for prefix in paths:
        copy_plots(a.work, f"{prefix}.spread", f"{prefix}-spread", plots, f"{label(prefix)}, spread")
    w("Per-run plots (latency histogram; answers per 100 ms, where a stall would show as a gap):")
    w("")
    for prefix in paths:
        for scenario in plotted:
            stem = f"{prefix}-{scenario}"
            if os.path.exists(os.path.join(plots, f"{stem}-latency.svg")):
                w(f"- {label(prefix)}, {scenario}: [latency](results/{stem}-latency.svg), "
                  f"[answers over time](results/{stem}-timeline.svg)")
    w("")

    # --- a slot's opening -----------------------------------------------
    md.extend(opening_section(a.work, gates, bursts))
    md.extend(waitlist_section(a.work, bursts))

    # --- spread ---------------------------------------------------------
    w(f"## spread: winners' throughput over {spread_slots:,} slots")
    w("")
    w(f"{spread_slots:,} slots x {capacity} seats, {spread_parties:,} parties of {party} (every call a winner), "
      "128 workers each sending when")
    w("its last call answered. The baseline is plain PostgreSQL on slotgate's own tables, measured with")
    w(f"pgbench on the same run: {a.pool} connections (slotgate's pool size), each transaction one reservation")
    w(f"insert and one conditional seat update (`reserved + {party} <= capacity`) on a random slot of {spread_slots:,}, "
      "prepared")
    w("statements, the server's default durability (synchronous commit).")
    w("")
    w("CPU per call is measured from `/proc` over each spread run: the server process, every PostgreSQL")
    w("process, Redis, and the rest of the machine's busy time (the load tool, mostly), divided by the")
    w("calls; *busy* is the share of all the machine's cores in use. Both cover the whole run, opening the")
    w(f"{spread_slots:,} slots and the checks after it included (one `GetRemaining` per slot).")
    w("")
    w("| path | calls | winners | commits/s | p50 | p95 | p99 | / pgbench | CPU per call: server, PostgreSQL, Redis, rest | busy |")
    w("|---|---:|---|---:|---:|---:|---:|---:|---|---:|")
    w(f"| pgbench, insert + conditional update | {pg['transactions']:,} | n/a | {pg['tps']:,.0f} | "
      f"{ms(pg['latency'])} (average) | n/a | n/a | 1.0x | "
      f"{cpu_cells(a.work, 'pgbench', {'calls': pg['transactions']})} |")
    for prefix in paths:
        path = os.path.join(a.work, f"{prefix}.spread.json")
        if not os.path.exists(path):
            continue
        f = figures(load(path))
        commits = f["rps"] if prefix == "trivial" else f["ok"] / (f["makespan"] / 1000)
        w(f"| {label(prefix)} | {f['calls']:,} | {winners_cell(f, prefix == 'trivial')} | {commits:,.0f}"
          f"{' (calls/s)' if prefix == 'trivial' else ''} | {ms(f['p50'])} | {ms(f['p95'])} | {ms(f['p99'])} | "
          f"{ratio(commits, pg['tps'])} | {cpu_cells(a.work, prefix, f)} |")
    w("")

    # --- soak -----------------------------------------------------------
    w(f"## Open loop: a fixed arrival rate for {a.soak} (latency below saturation)")
    w("")
    w("Calls start at the given rate whether or not earlier ones have answered, over 100 slots large enough")
    w("that every call books: the winners' whole path (gate, transaction, commit) at that rate.")
    w("")
    w("| rate | path | calls | achieved calls/s | winners | p50 | p95 | p99 | p95 / trivial |")
    w("|---:|---|---:|---:|---|---:|---:|---:|---:|")
    for rate in rates:
        trivial_path = os.path.join(a.work, f"trivial.soak-{rate}.json")
        trivial = figures(load(trivial_path)) if os.path.exists(trivial_path) else None
        for prefix in paths:
            path = os.path.join(a.work, f"{prefix}.soak-{rate}.json")
            if not os.path.exists(path):
                continue
            f = figures(load(path))
            booked = winners_cell(f, prefix == "trivial")
            w(f"| {rate}/s | {label(prefix)} | {f['calls']:,} | {f['rps']:,.0f} | {booked} | {ms(f['p50'])} | "
              f"{ms(f['p95'])} | {ms(f['p99'])} | {ratio(f['p95'], trivial['p95']) if trivial else 'n/a'} |")
    w("")

    k6_rows = []
    k6_winners = []
    k6_repeats = 0
    for scenario in bursts:
        for call, prefix in (("create", gates[0]), ("health", "trivial")):
            runs = k6_runs(a.work, scenario, call)
            if not runs:
                continue
            k6_repeats = max(k6_repeats, len(runs))
            if seed["by_name"][scenario]["winners"] not in k6_winners:
                k6_winners.append(seed["by_name"][scenario]["winners"])
            ours = median_run(a.work, prefix, scenario)[0]
            mid = lambda key: median([r[key] for r in runs if r[key] is not None])
            booked = "n/a" if call == "health" else ", ".join(f"{r['booked']}" for r in runs)
            cpu = mid("cpu")
            every_cpu = ", ".join("n/a" if r["cpu"] is None else f"{r['cpu']:.0f}" for r in runs)
            k6_rows.append(
                f"| {scenario} | {label(prefix)} | {runs[0]['calls']:,} | {booked} | "
                f"{sum(r['unexpected'] for r in runs)} | {ms(mid('p50'))} | {ms(mid('p95'))} | {ms(mid('p99'))} | "
                f"{ms(mid('makespan'))} | {'n/a' if cpu is None else f'{cpu:.0f} µs'} | "
                f"{', '.join(ms(r['makespan']) for r in runs)} | "
                f"{every_cpu} | "
                f"{ms(ours[0]['p95']) if ours else 'n/a'} |"
            )
    if k6_rows:
        w("## Cross-check with k6")
        w("")
        w("k6 (the seed team's tool, `loadtest/k6/burst.js`) as an independent client against the same")
        w(f"`--gate {gates[0]}` server: every virtual user opens its own connection and sends its calls at once.")
        w(f"Its thresholds fail the run on anything but exactly {' or '.join(map(str, k6_winners))} winners and "
          "zero unexpected codes. k6's")
        w("JavaScript virtual users share this machine's cores with the server, so its latencies carry more of")
        w("the client's own cost: compare each k6 row with k6's own health `Check` row, as for slotgate-load.")
        w(f"Each shape ran {k6_repeats} times, the burst and the health calls alternating; the figures are the")
        w("runs' medians. *Makespan* is the longest virtual user's iteration (connect, send every call, take")
        w("every answer); *CPU per call* is the server's plus Redis's.")
        w("")
        w("| scenario | path | calls | winners (every run) | unexpected | k6 p50 | k6 p95 | k6 p99 | makespan | CPU per call (server + Redis) | makespan of every run | CPU (µs) of every run | slotgate-load p95 |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
        md.extend(k6_rows)
        w("")

    w("## Reading the figures")
    w("")
    w("- **Refusals decide a burst.** With `--gate redis` a refused call is one Lua script in Redis and never")
    w("  touches PostgreSQL. With `db-lock` and `fair-lock` every call, refused or not, takes a database")
    w("  connection and queues on the slot's lock. Same winners, same answers (the correctness checks above")
    w("  pass for every run); the difference in the burst tables is how fast the refusals come back.")
    w("- **Winners pay for the gate.** A winner behind the Redis gate makes two more Redis round trips (the")
    w("  hold, then its release after the commit) around the same transaction. Where every call wins and no")
    w("  lock is contended (spread, open loop) the three strategies stay close, and which one is ahead changes")
    w("  from run to run: the gate earns its keep on refusals and by keeping a burst off the database, not on")
    w("  the winners' path.")
    w("- **Spread: where the time goes.** pgbench is one lean C client; a reservation also pays for gRPC,")
    w("  the server and the load tool, on the same cores as PostgreSQL. The CPU columns of the spread table")
    w("  split each call's cost; a *busy* near 100% means the cores, not PostgreSQL's locks, set the pace.")
    w("- **The trivial RPC is the floor, not zero.** On this machine the load tool, the server, PostgreSQL and")
    w("  Redis share the same cores, so the tool's own cost is in every figure, the floor included.")
    w("- **The seed's figures come from another stack** (Spring Boot, blocking threads, MySQL, Redisson) and")
    w("  another machine. Their fair lock was held across 5-16 queries issued from a blocking thread pool;")
    w("  `fair-lock` here holds it across a few prepared statements, so it is far faster than theirs in")
    w("  absolute terms. Compare strategies within this page; the seed column says what the product replaces.")
    w("- The first burst after a server starts (burst-100's first run) has been the slowest of its runs for")
    w("  every strategy here, so each burst is run several times and the median run reported; the last")
    w("  column has every run's p95, lowest first.")
    w("")
    w("## duplicate-2000, one row per strategy")
    w("")
    w("*CPU per call* is the server's plus Redis's, over the whole run (from /proc; ticks of 10 ms, so a run")
    w("of a few hundred ms is coarse).")
    w("")
    w("| scenario | path | calls | winners | p50 | p95 | p99 | makespan | calls/s | CPU per call (server + Redis) | p95 / trivial | p95 / redis | seed / p95 | p95 of every run |")
    w("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    md.extend(headline)
    w("")
    with open(os.path.join(a.out, "RESULTS.md"), "w") as f:
        f.write("\n".join(md))


if __name__ == "__main__":
    main()
