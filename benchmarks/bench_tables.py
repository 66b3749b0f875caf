"""Markdown tables from a pytest-benchmark JSON of benchmarks/test_benchmarks.py (for the
README), and the exact instruction changes between two such files.

    python -m benchmarks.bench_tables RUN.json
    python -m benchmarks.bench_tables --compare OLD.json NEW.json    # exit 1 on any increase
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(path: str) -> list[dict[str, Any]]:
    return list(json.loads(Path(path).read_text())["benchmarks"])


def tables(benches: list[dict[str, Any]]) -> str:
    host = [b for b in benches if "instructions" not in b["extra_info"]]
    device = [b for b in benches if "instructions" in b["extra_info"]]
    out = []
    if host:
        out += ["| model | target | engine | median ms | min ms | rounds | max abs diff vs ORT |",
                "|---|---|---|---:|---:|---:|---:|"]
        for b in sorted(host, key=lambda b: (b["group"], b["extra_info"]["engine"])):
            e, s = b["extra_info"], b["stats"]
            diff = e.get("max_abs_diff_vs_ort")
            out.append(f"| {e['model']} | {e['target']} | {e['engine']} | "
                       f"{1e3 * s['median']:.4f} | {1e3 * s['min']:.4f} | {s['rounds']} | "
                       f"{'-' if diff is None else f'{diff:.1e}'} |")
        out.append("")
    if device:
        out += ["| model | target | variant | instructions | instr/MAC | RAM B | stack B | "
                "flash B | QEMU wall s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for b in sorted(device, key=lambda b: (b["group"], b["extra_info"]["engine"])):
            e = b["extra_info"]
            out.append(f"| {e['model']} | {e['target']} | {e['engine']} | "
                       f"{e['instructions']:,} | {e['instructions_per_mac']} | "
                       f"{e['ram_bytes']:,} | {e['stack_bytes']:,} | {e['flash_bytes']:,} | "
                       f"{b['stats']['median']:.2f} |")
    return "\n".join(out)


def compare(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> tuple[str, bool]:
    """Instruction counts of the benchmarks both files hold; True when any went up."""
    before = {b["fullname"]: b["extra_info"] for b in old if "instructions" in b["extra_info"]}
    lines, worse = [], False
    for b in new:
        e, prev = b["extra_info"], before.get(b["fullname"])
        if prev is None or "instructions" not in e:
            continue
        d = e["instructions"] - prev["instructions"]
        worse |= d > 0
        lines.append(f"{b['fullname']}: {prev['instructions']:,} -> {e['instructions']:,} "
                     f"({100 * d / max(prev['instructions'], 1):+.2f}%)"
                     + ("  REGRESSION" if d > 0 else ""))
    return "\n".join(lines) or "no benchmark in common", worse


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--compare":
        text, worse = compare(_load(argv[1]), _load(argv[2]))
        print(text)
        return 1 if worse else 0
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    print(tables(_load(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
