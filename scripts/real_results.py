#!/usr/bin/env python3
"""Gathers the records of scripts/real-results.sh (WORK) into OUT/spliced.md and OUT/spliced.json.

The knee of a sparsity curve is the point farthest above the chord from its sparsest to its
densest SAE, with log2(L0) and the CE loss score each scaled to [0, 1] (Kneedle's rule)."""

import json
import math
import pathlib
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def row(name, e):
    s, r = e["splice"], e["reconstruction"]
    return {
        "sae": name,
        "l0": r["l0"],
        "explained_variance": e["explained_variance"],
        "ce_loss_score": s["ce_loss_score"],
        "kl_score": s["kl_score"],
        "delta_lm_loss": s["delta_lm_loss"],
        "ce_clean": s["ce_clean"],
        "ce_sae": s["ce_sae"],
        "l2_ratio": r["l2_ratio"],
        "cosine": r["cosine"],
        "dead_fraction": r["dead_fraction"],
        "tokens": s["tokens"],
    }


def knee(rows):
    pts = sorted((math.log2(max(r["l0"], 1e-9)), r["ce_loss_score"], r["sae"]) for r in rows)
    if len(pts) < 3:
        return None
    (x0, y0, _), (x1, y1, _) = pts[0], pts[-1]
    if x1 == x0 or y1 == y0:
        return None
    def lift(p):
        return (p[1] - y0) / (y1 - y0) - (p[0] - x0) / (x1 - x0)
    return max(pts, key=lift)[2]


def curve_svg(series, knees):
    """CE loss score against L0 (log2 axis), one polyline per series, knees circled."""
    w, h, m = 560, 360, 56
    pts = [r for rows in series.values() for r in rows]
    xs = [math.log2(max(r["l0"], 1e-3)) for r in pts]
    ys = [r["ce_loss_score"] for r in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), 1.0
    def px(r):
        x = m + (math.log2(max(r["l0"], 1e-3)) - x0) / (x1 - x0 or 1) * (w - 2 * m)
        y = h - m - (r["ce_loss_score"] - y0) / (y1 - y0 or 1) * (h - 2 * m)
        return x, y
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
           f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
           f'<text x="{w / 2}" y="{h - 16}" text-anchor="middle">L0 (log scale)</text>',
           f'<text x="16" y="{h / 2}" transform="rotate(-90 16 {h / 2})" text-anchor="middle">CE loss score</text>']
    for e in range(math.ceil(x0), math.floor(x1) + 1):
        x = m + (e - x0) / (x1 - x0 or 1) * (w - 2 * m)
        out.append(f'<text x="{x:.1f}" y="{h - m + 16}" text-anchor="middle">{2 ** e}</text>')
    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        y = h - m - (v - y0) / (y1 - y0 or 1) * (h - 2 * m)
        out.append(f'<text x="{m - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for (name, rows), colour in zip(series.items(), ["#1f77b4", "#d62728"]):
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in map(px, rows))
        out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for r in rows:
            x, y = px(r)
            ring = ' stroke="black" stroke-width="2"' if r["sae"] == knees.get(name) else ""
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{6 if ring else 3}" fill="{colour}"{ring}/>')
        lx, ly = px(rows[-1])
        out.append(f'<text x="{lx - 8:.1f}" y="{ly - 10:.1f}" text-anchor="end" fill="{colour}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def table(rows, cols):
    head = "| " + " | ".join(c for c, _ in cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = ""
    for r in rows:
        cells = []
        for _, key in cols:
            v = r[key]
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        body += "| " + " | ".join(cells) + " |\n"
    return head + body


COLS = [
    ("SAE", "sae"), ("L0", "l0"), ("explained variance", "explained_variance"),
    ("CE loss score", "ce_loss_score"), ("KL score", "kl_score"),
    ("delta LM loss", "delta_lm_loss"), ("L2 ratio", "l2_ratio"), ("cosine", "cosine"),
    ("dead", "dead_fraction"),
]


def main(work, out):
    work, out = pathlib.Path(work), pathlib.Path(out)
    evals = {p.stem[len("eval-"):]: load(p) for p in sorted(work.glob("eval-*.json"))}
    topk = sorted((row(n, e) for n, e in evals.items() if n.startswith("topk-") and "@" not in n),
                  key=lambda r: r["l0"])
    relu = sorted((row(n, e) for n, e in evals.items() if n.startswith("relu-")),
                  key=lambda r: r["l0"])
    shift = [row(n, e) for n, e in evals.items() if "@" in n]
    codes = []
    for p in sorted(work.glob("codes-*.json")):
        e = load(p)
        sae, how = p.stem[len("codes-"):].rsplit("-", 1)
        codes.append({"sae": sae, "codes": "encoder" if how == "sae" else "ITO (lambda 1)",
                      "explained_variance": 1.0 - e["fvu"], "l0": e["l0"],
                      "cosine": e["cosine"], "l2_ratio": e["l2_ratio"]})
    stability = load(work / "stability" / "results.json") if (work / "stability" / "results.json").exists() else None
    results = {
        "curves": {"topk": topk, "relu": relu, "knee": {"topk": knee(topk), "relu": knee(relu)}},
        "shift": shift,
        "shift_codes": codes,
        "stability": stability["results"] if stability else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "spliced.json", "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    some = next(iter(evals.values()))
    md = "# Real network: SAEs on SmolLM2-135M, judged spliced into the model\n\n"
    md += (f"Residual stream after block {some['config']['layer']} of SmolLM2-135M-Instruct (Q4_1 GGUF, "
           f"dequantised). SAEs trained on harvested State of the Union addresses; every SAE scored "
           f"on {some['splice']['tokens']} next-token positions of contexts drawn with another seed "
           f"(`sparsecode eval --model`): CE loss score = (CE_abl - CE_sae) / (CE_abl - CE_clean), "
           f"KL score likewise, explained variance, L0 and the L2 ratio on the same positions. "
           f"Reproduce with `scripts/real-results.sh`.\n\n")
    md += "## Sparsity curves\n\n**TopK over k**\n\n" + table(topk, COLS) + "\n"
    md += "**ReLU + L1 over the L1 coefficient**\n\n" + table(relu, COLS) + "\n"
    md += (f"Knee of the CE loss score against log2 L0 (Kneedle's rule, circled): TopK at "
           f"`{knee(topk)}`, ReLU at `{knee(relu)}`.\n\n![CE loss score against L0](curve.svg)\n\n")
    with open(out / "curve.svg", "w") as f:
        f.write(curve_svg({"TopK": topk, "ReLU + L1": relu},
                          {"TopK": knee(topk), "ReLU + L1": knee(relu)}))
    md += "## Distribution shift: spliced in on Moby-Dick\n\n"
    md += ("`topk-k32@moby`: the addresses' SAE; `moby-topk-k32@moby`: the same recipe trained on "
           "Moby-Dick.\n\n") + table(shift, COLS) + "\n"
    md += ("Explained variance divides by the variance of the positions evaluated, so it does not "
           "compare across corpora; the CE and KL scores, measured against the same model on the "
           "same tokens, do.\n\n")
    if codes:
        md += ("**Encoder against ITO on the same decoder**, on 1,024 Moby-Dick tokens drawn with another seed "
               "(`eval --data --ito-lambda 1`):\n\n")
        md += table(codes, [("SAE", "sae"), ("codes", "codes"), ("L0", "l0"),
                            ("explained variance", "explained_variance"), ("cosine", "cosine"),
                            ("L2 ratio", "l2_ratio")]) + "\n"
    if stability:
        md += "## Stability over seeds (TopK, k = 32)\n\n"
        for t in stability.get("tables", []):
            md += f"**{t['title']}**\n\n| " + " | ".join(t["header"]) + " |\n|" + "---|" * len(t["header"]) + "\n"
            for r in t["rows"]:
                md += "| " + " | ".join(r) + " |\n"
            md += "\n"
    with open(out / "spliced.md", "w") as f:
        f.write(md)
    print(f"wrote {out / 'spliced.md'}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: real_results.py WORK OUT")
    main(sys.argv[1], sys.argv[2])
