#!/usr/bin/env python3
"""Compares two builds of `bench` fairly: for each run and each URL, the old build and then the
new build measure the same driver back to back (alternating, so load on the machine hits both
alike), and the summary gives per driver and column the median and the range of each build,
and new / old of the medians.

    python3 scripts/bench_compare.py --old /path/old/bench --new target/release/bench \\
        --runs 3 --jobs 20000 --samples 50 --url sqlite:///tmp/bench.db --url redis://...

Arguments other than --old, --new and --runs go to both builds (each --url is run on its own).
Each bench looks for its `runall` binary next to itself.
"""

import statistics
import subprocess
import sys

def parse(argv):
    old = new = None
    runs = 3
    urls, rest = [], []
    it = iter(argv)
    for a in it:
        if a == "--old":
            old = next(it)
        elif a == "--new":
            new = next(it)
        elif a == "--runs":
            runs = int(next(it))
        elif a == "--url":
            urls.append(next(it))
        else:
            rest.append(a)
    if not old or not new or not urls:
        sys.exit(__doc__)
    return old, new, runs, urls, rest


def row(binary, url, rest):
    """The driver's name and its figures by column name (from the table's header: builds
    with more columns than the other compare on the ones both have)."""
    out = subprocess.run(
        [binary, "--url", url, *rest], capture_output=True, text=True, check=False
    ).stdout
    header = None
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "driver":
            header = cells
        elif header and len(cells) == len(header) and not cells[0].startswith("---"):
            return cells[0], dict(zip(header[1:], cells[1:]))
    raise RuntimeError(f"{binary} --url {url}: no result row in\n{out}")


def number(cell):
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return None


def summary(values):
    xs = [v for v in values if v is not None]
    if not xs:
        return "-", None
    med = statistics.median(xs)
    fmt = (lambda x: f"{x:,.0f}") if med >= 100 else (lambda x: f"{x:.2f}")
    return f"{fmt(med)} ({fmt(min(xs))}-{fmt(max(xs))})", med


def main():
    old, new, runs, urls, rest = parse(sys.argv[1:])
    results = {}  # (url, build) -> list of cell lists
    names = {}
    for r in range(runs):
        for url in urls:
            for build, binary in (("old", old), ("new", new)):
                name, cells = row(binary, url, rest)
                names[url] = name
                results.setdefault((url, build), []).append(cells)
                shown = " | ".join(f"{k} {v}" for k, v in cells.items())
                print(f"run {r + 1}/{runs} {build} {name}: {shown}", file=sys.stderr)
    print(f"{runs} runs per build, alternating old and new per driver; median (min-max)\n")
    print("| driver | figure | old | new | new / old |")
    print("|---|---|---|---|---|")
    for url in urls:
        columns = list(results[(url, "new")][0].keys())
        for col in columns:
            o, om = summary([number(c.get(col, "-")) for c in results[(url, "old")]])
            n, nm = summary([number(c.get(col, "-")) for c in results[(url, "new")]])
            ratio = f"{nm / om:.2f}" if om and nm else "-"
            print(f"| {names[url]} | {col} | {o} | {n} | {ratio} |")


if __name__ == "__main__":
    main()
