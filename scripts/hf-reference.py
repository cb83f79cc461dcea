#!/usr/bin/env python3
"""Writes the Hugging Face reference of a GGUF model's forward (SmolLM2, Gemma 3) that
crates/harvest/tests/hf_reference.rs checks our own forward against, so that CI needs no PyTorch.

Hugging Face transformers loads the same GGUF file offline (dequantised by PyPI's `gguf`) and runs
its own Llama implementation, which shares no code with ours (candle tensors, our RoPE on
llama.cpp's permuted query/key rows). Recorded: the token ids its tokenizer gives a few texts, and
for fixed token ids the residual stream after a few blocks (norm and first dimensions of every
position) and the next-token logits' top tokens.

    python3 -m venv v && v/bin/pip install torch transformers accelerate gguf numpy
    v/bin/python scripts/hf-reference.py assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        crates/harvest/tests/fixtures/smollm2_hf_reference.json
    v/bin/python scripts/hf-reference.py assets/gemma3/gemma-3-270m-q4_k_m.gguf \
        crates/harvest/tests/fixtures/gemma3_hf_reference.json 0,5,11,16
(the layers after which the residual is recorded: never the last block, whose hidden state
transformers returns after the final norm)
"""

import json
import pathlib
import sys

import torch
import transformers

TEXTS = [
    "Call me Ishmael.",
    "The whale swam towards the ship, and the captain watched.",
    "Fellow-Citizens of the Senate and of the House of Representatives:",
    "naïve café — 3.14159 ≠ π",
]
PROMPT = "It was the best of times, it was the worst of times"
LAYERS = [0, 2, 15, 28]
DIMS = 24


def main(gguf_path, out_path, chosen):
    gguf_path = pathlib.Path(gguf_path)
    kw = {"gguf_file": gguf_path.name, "local_files_only": True}
    tok = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, dtype=torch.float32, **kw
    )
    model.eval()
    texts = [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in TEXTS]
    ids = [tok.bos_token_id] + tok(PROMPT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    # hidden_states[0] is the embedding; [l + 1] the residual after block l (the last one has
    # the final norm applied, so it is not used).
    layers = []
    for l in chosen:
        h = out.hidden_states[l + 1][0]
        layers.append({
            "layer": l,
            "norms": h.norm(dim=-1).tolist(),
            "first_dims": h[:, :DIMS].tolist(),
        })
    logits = out.logits[0, -1]
    top = torch.topk(logits, 5)
    ref = {
        "source": "transformers " + transformers.__version__ + ", torch " + torch.__version__,
        "model_file": gguf_path.name,
        "bos": tok.bos_token_id,
        "texts": texts,
        "prompt_ids": ids,
        "layers": layers,
        "last_logits_top5": {"ids": top.indices.tolist(), "values": top.values.tolist()},
    }
    pathlib.Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: hf-reference.py MODEL.gguf OUT.json [LAYER,LAYER,...]")
    chosen = [int(l) for l in sys.argv[3].split(",")] if len(sys.argv) == 4 else LAYERS
    main(sys.argv[1], sys.argv[2], chosen)
