#!/usr/bin/env python3
"""Writes crates/harvest/tests/fixtures/gemma3_tokens.json: the token ids transformers gives for
fixed texts with the tokenizer it builds from the Gemma 3 270M GGUF (no model hub: the file from
`scripts/fetch-assets gemma3`). Run with a venv holding transformers, tokenizers and gguf:
    python3 -m venv v && v/bin/pip install transformers gguf sentencepiece
    v/bin/python scripts/gemma3-tokens.py"""

import json
import pathlib

import transformers
from transformers import AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEXTS = [
    "Hello world",
    "The whale swam towards the ship.",
    "  two  spaces and\ttab\nnewline\n\n\nthree",
    "naïve café — ≠ π 😀 ﷽ \u0007",
    "<start_of_turn>user\nhi<end_of_turn>",
    "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse,",
    "def f(x):\n    return x**2  # squares 12345 67890",
    "Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans:",
    "日本語のテキストと한국어 텍스트",
    "   leading spaces and trailing   ",
]


def main():
    name = "gemma-3-270m-q4_k_m.gguf"
    tok = AutoTokenizer.from_pretrained(str(ROOT / "assets" / "gemma3"), gguf_file=name)
    out = {
        "transformers": transformers.__version__,
        "gguf": name,
        "texts": [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in TEXTS],
    }
    path = ROOT / "crates" / "harvest" / "tests" / "fixtures" / "gemma3_tokens.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
