#!/usr/bin/env python3
"""Renders the result tables of BENCHMARKS.md from a `redguard-bench --json FILE` report.

    python3 scripts/bench-tables.py benchmarks/redguard-bench-latest.json

Prints Markdown to stdout: one table per workload (medians over rounds, ratios and added latency against
`direct` of the same round, as the tool computed them), the memory table, the CPU split at the highest
concurrency, and the tool's own target checks. Nothing here computes a figure the tool did not report,
except the CPU split's sums.
"""

import json
import sys

TITLES = {
    "get": "GET",
    "set": "SET ({value_size}-byte values)",
    "mix": "90% GET / 10% SET over {keys:,} keys",
    "pipeline": "Pipeline of {pipeline_depth} GETs (one request = one pipeline)",
}


def num(value, digits=1):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def signed(value):
    return f"{value:+,.1f}" if value else "0"


def cell_row(cell):
    m, vs = cell["median"], cell.get("vs_direct") or {}
    direct = cell["target"] == "direct"
    return "| {c} | {t} | {rps} | {p50} | {p90} | {p99} | {p999} | {err} | {cpu} | {rss} | {x} | {a50} | {a99} |".format(
        c=cell["concurrency"],
        t=cell["target"],
        rps=num(m["rps"], 0),
        p50=num(m["p50_us"]),
        p90=num(m["p90_us"]),
        p99=num(m["p99_us"]),
        p999=num(m["p999_us"]),
        err=m["errors"],
        cpu=num(m.get("sidecar_cpu_ms_per_1k")),
        rss=num(m.get("sidecar_peak_rss_mib")),
        x="1.00" if direct else num(vs.get("rps_ratio"), 2),
        a50="0" if direct else signed(vs.get("added_p50_us")),
        a99="0" if direct else signed(vs.get("added_p99_us")),
    )


def main(path):
    report = json.load(open(path))
    settings = report["settings"]
    out = []
    header = (
        "| conc. | target | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | errors | cpu µs/req | peak RSS MiB "
        "| x rps | +p50 µs | +p99 µs |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for workload in settings["workloads"]:
        out.append(f"### {TITLES[workload].format(**settings)}\n")
        out.append(header)
        for cell in report["cells"]:
            if cell["workload"] != workload:
                continue
            if cell["available"]:
                out.append(cell_row(cell))
            elif cell["target"] == "redguard-open" and workload != "get":
                continue  # runs the GET workload only: with the circuit open, writes are refused by design
            else:
                out.append(f"| {cell['concurrency']} | {cell['target']} | *not measured* |" + " |" * 10)
        out.append("")

    out.append("### Memory\n\n| | RSS |\n|---|---|")
    idle = report["idle_rss_mib"]
    others = ", ".join(f"{k}: {v:.1f} MiB" for k, v in idle.items() if k != "redguard")
    out.append(f"| redguard idle, right after start | {idle['redguard']:.1f} MiB ({others}) |")
    peak = max(
        (c["median"].get("sidecar_peak_rss_mib") or 0)
        for c in report["cells"]
        if c["available"] and c["target"] == "redguard"
    )
    out.append(f"| redguard peak during the run ({settings['keys']:,} keys cached) | {peak:.1f} MiB |")
    for m in report.get("memory", []):
        out.append(
            f"| cache full, {m['value_size']:,}-byte values: {m['cache_entries']:,.0f} entries, `cache_bytes` "
            f"{m['cache_bytes'] / 2**20:.2f} MiB | {m['full_rss_mib']:.1f} MiB = `max_bytes` + "
            f"{m['above_max_bytes_mib']:.1f} MiB |"
        )
    out.append("")

    top = max(settings["concurrency"])
    out.append(f"### Where the CPU goes at concurrency {top} (µs of CPU per GET)\n")
    out.append("| target | sidecar | Redis | load tool | total |\n|---|---|---|---|---|")
    for cell in report["cells"]:
        if cell["workload"] == "get" and cell["concurrency"] == top and cell["available"]:
            m = cell["median"]
            parts = [m.get("sidecar_cpu_ms_per_1k"), m.get("redis_cpu_ms_per_1k"), m.get("client_cpu_ms_per_1k")]
            total = sum(p for p in parts if p is not None)
            out.append(f"| {cell['target']} | " + " | ".join(num(p) for p in parts) + f" | {num(total)} |")
    out.append("")

    out.append("### The tool's target checks\n\n| target | result | figures |\n|---|---|---|")
    for check in report["checks"]:
        verdict = "**met**" if check["met"] else "**missed**"
        out.append(f"| {check['target']} | {verdict} | {check['detail']} |")
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
