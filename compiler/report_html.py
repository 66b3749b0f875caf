"""`nnc report out/` / `nnc compile --report-html`: one self-contained HTML file about a compiled
model: summary (MACs, weights, RAM and flash against the target's sizes), per-layer table and bar
chart (instructions on the board, MACs on the host), the arena's memory timeline (which tensor
lives where and when, the peak marked), int8 per-layer SQNR (with `--report`), and the eval
results and bench history of this model from the history file.

Charts are inline SVG written here, not matplotlib or plotly: no dependency, no embedded fonts
or scripts, text that stays selectable and searchable, and a VWW report of ~100 KB (plotly
would embed ~3.5 MB of JavaScript per file; matplotlib would add a 40 MB dependency for a few
rectangles). The file needs no network and no script at all.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nnc.compiler.errors import NncError

REPORT_FILE = "report.html"
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")


def memory_plan(module: Any) -> list[dict[str, Any]]:
    """The arena's slots for nnc.json: name (and the tensors sharing the slot in place), byte
    offset and size, and the kernels [first, last] it is live in."""
    from nnc.passes.plan_memory import lifetimes

    by_name = {b.name: b for b in module.buffers}
    out = []
    for block in lifetimes(module, 1, True):
        first = by_name[block.members[0]]
        if first.offset is None or block.last < block.first:
            continue
        out.append({"name": block.name, "members": list(block.members),
                    "offset": int(first.offset),
                    "bytes": max(by_name[m].nbytes for m in block.members),
                    "first": block.first, "last": block.last})
    return out


# ---- small SVG helpers


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _num(x: float | int | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-" if x is None or math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:,.{digits}f}"


def _bars(labels: Sequence[str], values: Sequence[float], unit: str, width: int = 760) -> str:
    """A horizontal bar chart, one bar per label."""
    row, left = 16, 230
    vmax = max([v for v in values if math.isfinite(v)] + [1e-12])
    height = row * len(values) + 24
    parts = [f'<svg class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(unit)} per layer">']
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        y = 4 + i * row
        w = 0 if not math.isfinite(v) else max(v, 0) / vmax * (width - left - 120)
        parts.append(f'<text x="{left - 6}" y="{y + 11}" text-anchor="end">{_e(lab[:34])}</text>'
                     f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{row - 4}" '
                     f'fill="{PALETTE[0]}"><title>{_e(lab)}: {_num(v, 1)} {_e(unit)}</title>'
                     f'</rect><text x="{left + w + 4:.1f}" y="{y + 11}">{_num(v)}</text>')
    parts.append(f'<text x="{left}" y="{height - 4}" class="axis">{_e(unit)}</text></svg>')
    return "".join(parts)


def _usage_bar(used: int, limit: int | None, label: str) -> str:
    if not limit:
        return f"<p>{_e(label)}: {used:,} B</p>"
    frac = used / limit
    color = PALETTE[4] if frac <= 0.8 else PALETTE[5] if frac <= 1 else PALETTE[2]
    w = 400
    return (f'<div class="usage"><span>{_e(label)}: {used:,} B of {limit:,} B '
            f'({100 * frac:.1f}%)</span><svg width="{w}" height="14" role="img" '
            f'aria-label="{_e(label)} usage"><rect width="{w}" height="14" fill="#eee"/>'
            f'<rect width="{min(frac, 1) * w:.1f}" height="14" fill="{color}"/></svg></div>')


def _timeline(plan: Sequence[Mapping[str, Any]], layers: Sequence[Mapping[str, Any]],
              arena: int) -> str:
    """Kernels on x, arena offsets on y; one rectangle per slot over its lifetime; the kernel
    where the most bytes are live is marked."""
    if not plan:
        return "<p>No arena tensors (everything is an input, output or constant).</p>"
    n = max(max(int(p["last"]) for p in plan) + 1, len(layers), 1)
    live = [sum(int(p["bytes"]) for p in plan if p["first"] <= t <= p["last"]) for t in range(n)]
    peak_t = max(range(n), key=lambda t: live[t])
    width, height, left, top, bottom = 760, 320, 70, 10, 40
    cw, ch = (width - left - 10) / n, height - top - bottom
    scale = ch / max(arena, 1)
    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} '
             f'{height}" role="img" aria-label="arena memory timeline">',
             f'<rect x="{left}" y="{top}" width="{width - left - 10}" height="{ch}" '
             'fill="#fafafa" stroke="#ccc"/>']
    for i, p in enumerate(plan):
        x = left + int(p["first"]) * cw
        w = (int(p["last"]) - int(p["first"]) + 1) * cw
        y = top + int(p["offset"]) * scale
        h = max(int(p["bytes"]) * scale, 1.0)
        members = ", ".join(p.get("members", [p["name"]]))
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                     f'fill="{PALETTE[i % len(PALETTE)]}" fill-opacity="0.8" stroke="#333" '
                     f'stroke-width="0.5"><title>{_e(members)}: {int(p["bytes"]):,} B at '
                     f'offset {int(p["offset"]):,}, kernels {p["first"]}-{p["last"]}</title>'
                     '</rect>')
    px = left + (peak_t + 0.5) * cw
    parts.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{top + ch}" stroke="#e15759" '
                 f'stroke-width="2" stroke-dasharray="4 3"/><text x="{px + 4:.1f}" '
                 f'y="{top + 12}" fill="#e15759">peak {live[peak_t]:,} B live at kernel '
                 f'{peak_t}</text>')
    parts.append(f'<text x="{left - 4}" y="{top + 10}" text-anchor="end" class="axis">0</text>'
                 f'<text x="{left - 4}" y="{top + ch}" text-anchor="end" class="axis">'
                 f'{arena:,} B</text><text x="{left}" y="{height - 12}" class="axis">kernel '
                 f'0</text><text x="{width - 10}" y="{height - 12}" text-anchor="end" '
                 f'class="axis">kernel {n - 1}</text></svg>')
    return "".join(parts)


def _line(values: Sequence[float], label: str, width: int = 760) -> str:
    height, left, top, bottom = 160, 90, 10, 24
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or max(abs(hi), 1e-12)
    cw = (width - left - 20) / max(len(values) - 1, 1)
    pts = [(left + i * cw, top + (1 - (v - lo) / span) * (height - top - bottom))
           for i, v in enumerate(values) if math.isfinite(v)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{PALETTE[1]}"/>'
                   for x, y in pts)
    return (f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} '
            f'{height}" role="img" aria-label="{_e(label)} over runs"><polyline points="{path}" '
            f'fill="none" stroke="{PALETTE[1]}" stroke-width="2"/>{dots}'
            f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" class="axis">'
            f'{_num(hi, 3 if hi < 100 else 0)}</text>'
            f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" class="axis">'
            f'{_num(lo, 3 if lo < 100 else 0)}</text><text x="{left}" y="{height - 6}" '
            f'class="axis">{_e(label)}, oldest run to newest</text></svg>')


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[object]]) -> str:
    head = ("<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead>"
            if header else "")
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1000px;
color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}
h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child,td:nth-child(2),td:nth-child(3),th:nth-child(2),
th:nth-child(3){text-align:left}
th{background:#f3f3f3}.chart{font-size:11px;display:block;margin:8px 0}.chart .axis{fill:#666}
.usage{margin:4px 0}.usage span{display:inline-block;width:440px}.note{color:#666;font-size:13px}
.bad{color:#c00;font-weight:bold}
"""


# ---- the report

# nothing loads from anywhere (the file is self-contained); a violation is a console error
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def build_report(out_dir: str | os.PathLike[str], history: str | os.PathLike[str] | None = None,
                 bench: bool = True) -> str:
    """The report's HTML for the compiled model in `out_dir`. `bench` measures it now (one run
    on the emulated board, or the host benchmark); `history` is the history file (default: the
    user's, see compiler/history.py)."""
    from nnc.compiler.api import CompiledModel

    model = CompiledModel.load(out_dir)
    info = model.info
    result = model.benchmark(warmup=3, repeat=20) if bench else None
    ident = info.get("model", {"name": Path(out_dir).name, "sha256": "?"})
    sections = [_summary(info, ident, result), _layers(info, result),
                _memory(info), _quant(info)]
    scheme = "int8" if info.get("quantization") or info.get("int8_rounding") else "fp32"
    sections += _from_history(ident, info["target"], scheme, history)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    import nnc

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            f"<title>nnc report: {_e(ident['name'])} on {_e(info['target'])}</title>"
            f"<style>{CSS}</style></head><body>"
            f"<h1>{_e(ident['name'])} on {_e(info['target'])}</h1>"
            f"<p class=\"note\">nnc {_e(nnc.__version__)}, {stamp}, from {_e(out_dir)}; model "
            f"SHA-256 {_e(ident['sha256'][:16])}</p>"
            + "".join(s for s in sections if s) + "</body></html>\n")


def write_report(out_dir: str | os.PathLike[str], output: str | os.PathLike[str] | None = None,
                 history: str | os.PathLike[str] | None = None, bench: bool = True) -> Path:
    """Write the report (default: `<out_dir>/report.html`); returns its path."""
    text = build_report(out_dir, history, bench)
    path = Path(output) if output is not None else Path(out_dir) / REPORT_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise NncError(f"report {path}: cannot write ({e.strerror})") from None
    return path


def _summary(info: Mapping[str, Any], ident: Mapping[str, Any],
             result: Mapping[str, Any] | None) -> str:
    fw = info.get("firmware")
    rows = [("MACs", f"{info['macs']:,}"), ("kernels", info["num_kernels"]),
            ("weights (constants)", f"{info['weight_bytes']:,} B"),
            ("arena", f"{info['arena_bytes']:,} B (floor {info['arena_floor_bytes']:,} B)")]
    if info.get("kernel_library"):
        rows.append(("library calls", f"{info['library_calls']} kernels call "
                     f"{info['kernel_library']}"))
    if info.get("quantization"):
        q = info["quantization"]
        rows.append(("int8", f"{q['int8_ops']} int8 ops, calibrated on "
                     f"{q['calibration_samples']} samples ({q['calibration_method']})"))
    opts = info.get("options", {})
    rows.append(("options", ", ".join(f"{k}={v}" for k, v in sorted(opts.items())
                                      if v is not None) or "-"))
    parts = ["<h2>Summary</h2>", _table(None, rows)]
    if result is not None and "instructions" in result:
        ram, flash = int(result["ram_bytes"]), int(result["flash_bytes"])
        parts.append(f"<p>{result['instructions']:,} instructions per run on the emulated "
                     f"{_e(result['board'])} ({_e(result['note'])}), "
                     f"{_num(result.get('instructions_per_mac'), 2)} per MAC; stack "
                     f"{result['stack_bytes']:,} B ({_e(result['stack_source'])}).</p>")
    elif fw:
        ram, flash = int(fw["ram_bytes"]), int(fw["flash_bytes"])
    else:
        ram, flash = int(info["arena_bytes"]), int(info["weight_bytes"])
        if result is not None and "latency_ms" in result:
            lat = result["latency_ms"]
            parts.append(f"<p>latency median {lat['median']:.4f} ms (min {lat['min']:.4f}) over "
                         f"{result.get('repeat', '?')} runs on this host.</p>")
    parts.append(_usage_bar(ram, info.get("ram_bytes_limit"), "RAM (arena + stack)"
                            if fw else "RAM (arena)"))
    parts.append(_usage_bar(flash, info.get("flash_bytes_limit"), "flash" if fw else
                            "weights"))
    return "".join(parts)


def _layers(info: Mapping[str, Any], result: Mapping[str, Any] | None) -> str:
    measured = result is not None and "layers" in result and "instructions" in result
    layers = result["layers"] if measured else info["layers"]  # type: ignore[index]
    key, unit = ("instructions", "instructions (emulated)") if measured else ("macs", "MACs")
    total = max(sum(int(la.get(key) or 0) for la in layers), 1)
    rows = []
    for i, la in enumerate(layers):
        v = int(la.get(key) or 0)
        row = [i, la.get("name") or la.get("kernel", ""), la["op"], f"{int(la['macs']):,}"]
        if measured:
            row += [f"{v:,}", _num(la.get("instructions_per_mac"), 2)]
        row.append(f"{100 * v / total:.1f}%")
        rows.append(row)
    header = ["#", "layer", "op", "MACs"] + (["instructions", "instr/MAC"] if measured else [])
    chart = _bars([f"{i} {la.get('name') or la['op']}" for i, la in enumerate(layers)],
                  [float(la.get(key) or 0) for la in layers], unit)
    return (f"<h2>Layers</h2><p class=\"note\">{len(layers)} kernels; bars: {unit}</p>{chart}"
            + _table([*header, "share"], rows))


def _memory(info: Mapping[str, Any]) -> str:
    plan = info.get("memory_plan")
    if plan is None:
        return ("<h2>Memory</h2><p>This build has no memory plan in nnc.json (compiled by an "
                "older nnc): compile again for the arena timeline.</p>")
    rows = [(p["name"], ", ".join(p["members"][1:]) or "-", f"{p['offset']:,}",
             f"{p['bytes']:,}", f"{p['first']}-{p['last']}")
            for p in sorted(plan, key=lambda p: (p["offset"], p["first"]))]
    return ("<h2>Memory</h2><p class=\"note\">The arena over the run: one box per tensor, from "
            "the kernel that writes it to the last that reads it, at its byte offset (tensors "
            "written in place share a box).</p>"
            + _timeline(plan, info["layers"], int(info["arena_bytes"]))
            + _table(("tensor", "in place", "offset B", "bytes", "kernels"), rows))


def _quant(info: Mapping[str, Any]) -> str:
    rep = info.get("quantization", {}).get("report")
    if not rep:
        return ""
    layers = rep["layers"]

    def val(x: Any) -> float:
        return float(x) if not isinstance(x, str) else float(x.replace("inf", "1e9"))

    chart = _bars([f"{s['index']} {s['name'] or s['op']}" for s in layers],
                  [min(val(s["sqnr_db"]), 80.0) for s in layers], "SQNR dB vs float (capped at 80)")
    rows = [(s["index"], s["name"], s["op"], _num(val(s["sqnr_db"]), 1),
             "-" if s["drop_db"] is None else _num(val(s["drop_db"]), 1),
             f"{100 * s['clipped']:.2f}%") for s in layers]
    outs = "; ".join(f"{o['name']}: {o['sqnr_db']} dB" for o in rep["outputs"])
    return (f"<h2>int8 accuracy</h2><p class=\"note\">Per-layer SQNR of the int8 graph against "
            f"the float one on {rep['evaluation']['samples']} {_e(rep['evaluation']['data'])}; "
            f"outputs {_e(outs)}</p>{chart}"
            + _table(("#", "layer", "op", "SQNR dB", "drop dB", "clipped"), rows))


def _tuning(run: Any) -> str:
    """The latest `nnc tune` of this model: per workload its best-so-far curve over the trials
    of that session (figure per trial, running minimum) and the summary table."""
    f = run.figures
    parts = [f"<h2>Tuning</h2><p class=\"note\">The latest <code>nnc tune</code> "
             f"({_e(run.time[:19])} UTC, {f.get('builds', 0)} builds in {f.get('seconds', 0)} s): "
             f"{_num(f.get('instructions_default'))} &rarr; {_num(f.get('instructions'))} "
             f"{_e(f.get('objective', ''))} with every best schedule</p>"]
    rows = []
    for w in f.get("workloads", []):
        curve = [float(x) for x in w.get("curve", []) if x is not None]
        best, so_far = math.inf, []
        for x in curve:
            best = min(best, x)
            so_far.append(best)
        if len(so_far) > 1:
            parts.append(_line(so_far, f"{w['op']} #{w['hash']} best so far").replace(
                "oldest run to newest", "trial by trial"))
        rows.append((w["hash"], w["op"], len(w.get("layers", [])), _num(w["default"]),
                     _num(w["best"]), f"{w['default'] / w['best']:.2f}x" if w["best"] else "-",
                     w["trials"]))
    parts.append(_table(("workload", "op", "layers", "default", "best", "speedup", "trials"),
                        rows))
    return "".join(parts)


def _from_history(ident: Mapping[str, Any], target: str, scheme: str,
                  path: str | os.PathLike[str] | None) -> list[str]:
    from nnc.compiler.history import History, default_path, regressions


    file = Path(path) if path is not None else default_path()
    if file is None or not file.exists() or ident.get("sha256", "?") == "?":
        return []  # reading a report creates no history
    try:
        h = History(file)
    except NncError:
        return []
    with h:
        runs = h.runs(model=ident["sha256"])
    out = []
    evals = [r for r in runs if r.kind == "eval"]
    if evals:
        last_time = evals[-1].time[:16]
        recent = [r for r in evals if r.time[:16] == last_time] or evals[-1:]
        rows = []
        for r in recent:
            f = r.figures
            cost = (f"{f['instructions']['mean']:,.0f} instr" if f.get("instructions") else
                    f"{f['latency_ms']:.4f} ms" if f.get("latency_ms") is not None else "-")
            rows.append((r.options.get("variant"), r.target, f["metric_name"],
                         _num(r.key_value, 4),
                         "-" if f["agreement"] is None else f"{100 * float(f['agreement']):.1f}%",
                         f["sqnr_db"], cost, f["samples"]))
        out.append("<h2>Evaluation</h2><p class=\"note\">The latest <code>nnc eval</code> of "
                   f"this model ({_e(recent[0].time[:19])} UTC)</p>" + _table(
                       ("variant", "target", "metric", "value", "top-1 agreement",
                        "SQNR dB", "cost", "samples"), rows))
    tunes = [r for r in runs if r.kind == "tune" and r.target == target and r.scheme == scheme]
    if tunes:
        out.append(_tuning(tunes[-1]))
    benches = [r for r in runs if r.kind == "bench" and r.target == target
               and r.scheme == scheme]
    if benches:
        regs = {reg.run.id: reg for reg in regressions(benches)}
        rows = [(r.id, r.time[:19].replace("T", " "), r.scheme, r.key, _num(r.key_value, 4),
                 ", ".join(f"{k}={v}" for k, v in sorted(r.options.items()) if v is not None),
                 "REGRESSION" if r.id in regs else "") for r in benches]
        flagged = "".join(f"<p class=\"bad\">{_e(reg.describe())}</p>" for reg in regs.values())
        out.append(f"<h2>History</h2><p class=\"note\">Every <code>nnc bench</code> of this "
                   f"model on {_e(target)}</p>{flagged}"
                   + _line([r.key_value for r in benches], benches[-1].key)
                   + _table(("run", "time (UTC)", "scheme", "figure", "value", "options", ""),
                            rows))
    return out
