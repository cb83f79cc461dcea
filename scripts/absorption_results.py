#!/usr/bin/env python3
"""Gathers the records of scripts/absorption-results.sh (WORK) into OUT/smollm2.md and
OUT/smollm2.json: per architecture the spliced metrics and the first-letter absorption task."""

import json
import pathlib
import sys

ARCHS = [("topk", "TopK"), ("batchtopk", "BatchTopK"), ("matryoshka", "Matryoshka BatchTopK")]


def load(path):
    with open(path) as f:
        return json.load(f)


def row(work, arch, label):
    e = load(work / f"eval-{arch}-k32.json")
    t = load(work / f"letters-{arch}-k32.json")
    s, r = e["splice"], e["reconstruction"]
    counted = [l for l in t["letters"] if l["counted"]]
    checked = sum(l["ablation_confirmed"][1] for l in counted)
    confirmed = sum(l["ablation_confirmed"][0] for l in counted)
    return {
        "arch": label,
        "l0": r["l0"],
        "explained_variance": e["explained_variance"],
        "ce_loss_score": s["ce_loss_score"],
        "kl_score": s["kl_score"],
        "delta_lm_loss": s["delta_lm_loss"],
        "words": t["words"],
        "counted_letters": t["counted_letters"],
        "enough_letters": t.get("enough_letters", t["counted_letters"] >= 20),
        "mean_absorption_fraction": t["mean_absorption_fraction"],
        "mean_full_absorption": t["mean_full_absorption"],
        "confirmed_full_absorption": t["confirmed_full_absorption"],
        "ablations_confirmed": [confirmed, checked],
        "mean_split_features": t["mean_split_features"],
        "letters": t["letters"],
    }


def main():
    work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    rows = [row(work, a, label) for a, label in ARCHS]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "smollm2.json", "w") as f:
        json.dump(rows, f, indent=1)
    cfg = load(work / "sae-topk-k32" / "train_config.json")["config"]
    rows_seen = load(work / "sotu" / "manifest.json")["rows"]
    lines = [
        "# Absorption on SmolLM2-135M, block 15",
        "",
        f"{cfg['latents']}-latent SAEs (k = 32) trained on the same {rows_seen:,} State of the "
        f"Union tokens ({cfg['steps']:,} steps of {cfg['batch_size']:,} rows); spliced metrics "
        f"on 4,096 tokens drawn with another seed; the first-letter task on {rows[0]['words']} "
        f"alphabetic one-token words (80% train, 20% test). Reproduce: "
        f"`scripts/absorption-results.sh`.",
        "",
        "| SAE | L0 | explained variance | CE loss score | KL score | letters counted | "
        "absorption fraction | full absorption | ablation-confirmed | split features |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, n = r["ablations_confirmed"]
        lines.append(
            f"| {r['arch']} | {r['l0']:.1f} | {r['explained_variance']:.3f} | "
            f"{r['ce_loss_score']:.4f} | {r['kl_score']:.4f} | {r['counted_letters']} | "
            f"{r['mean_absorption_fraction']:.3f} | {r['mean_full_absorption']:.3f} | "
            f"{r['confirmed_full_absorption']:.3f} ({c}/{n}) | {r['mean_split_features']:.2f} |"
        )
    lines += ["", "Per letter (counted letters: ground-truth probe F1 > 0.6):", ""]
    lines.append("| letter | " + " | ".join(f"{r['arch']} probe F1 / absorption / full" for r in rows) + " |")
    lines.append("|---|" + "---|" * len(rows))
    for i, l in enumerate(rows[0]["letters"]):
        cells = []
        for r in rows:
            x = r["letters"][i]
            tp = max(x["probe_true_positives"], 1)
            mark = "" if x["counted"] else " (not counted)"
            cells.append(
                f"{x['probe_f1']:.2f} / {x['mean_absorption_fraction']:.2f} / "
                f"{x['full_absorptions'] / tp:.2f}{mark}"
            )
        lines.append(f"| {l['letter']} | " + " | ".join(cells) + " |")
    (out / "smollm2.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
