"""The Python side of sparsecode's benchmark comparison (see run-comparison.sh).

Subcommands, each printing one JSON object:
  train  --arch {topk,topk-sparsify,relu} --dims M --latents N --k K --batch B --steps S --warmup W --threads T
         One PyTorch (CPU) SAE training step repeated: dense encoder, torch.topk + scatter (TopK) or
         ReLU + L1 (ReLU), dense decoder, MSE, backward, Adam, decoder rows renormalised;
         topk-sparsify decodes with F.embedding_bag over the k active rows, as sparsify does on CPU.
  encode --method {lasso,omp} --data X.npy --dictionary D.npy --alpha A --k K --threads T --out C.npy
         scikit-learn sparse_encode (lasso_cd or omp) on the same arrays sparsecode encodes.
  objective --data X.npy --dictionary D.npy --codes C.npy --alpha A
         0.5 ||x - c D||^2 + alpha ||c||_1 summed over samples (float64).
"""
import argparse
import json
import os
import statistics
import time

import numpy as np


def train(a):
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.randn(a.batch, a.dims)
    w_dec = torch.randn(a.latents, a.dims)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    w_enc = torch.nn.Parameter(w_dec.clone())
    w_dec = torch.nn.Parameter(w_dec)
    b_enc = torch.nn.Parameter(torch.zeros(a.latents))
    b_dec = torch.nn.Parameter(torch.zeros(a.dims))
    opt = torch.optim.Adam([w_enc, w_dec, b_enc, b_dec], lr=1e-4)
    times = []
    for step in range(a.warmup + a.steps):
        t = time.perf_counter()
        pre = (x - b_dec) @ w_enc.T + b_enc
        if a.arch == "topk-sparsify":
            # What EleutherAI sparsify runs on a CPU (no Triton): ReLU, torch.topk, and the
            # decoder as an embedding bag over the k active rows.
            vals, idx = torch.relu(pre).topk(a.k, dim=1, sorted=False)
            x_hat = torch.nn.functional.embedding_bag(idx, w_dec, per_sample_weights=vals, mode="sum") + b_dec
        elif a.arch == "topk":
            vals, idx = pre.topk(a.k, dim=1)
            z = torch.zeros_like(pre).scatter(1, idx, torch.relu(vals))
        else:
            z = torch.relu(pre)
        if a.arch != "topk-sparsify":
            x_hat = z @ w_dec + b_dec
        loss = (x_hat - x).pow(2).sum(1).mean()
        if a.arch == "relu":
            loss = loss + 1e-3 * (z * w_dec.norm(dim=1)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            w_dec /= w_dec.norm(dim=1, keepdim=True)
        if step >= a.warmup:
            times.append((time.perf_counter() - t) * 1e3)
    med = statistics.median(times)
    print(json.dumps({"samples_per_s": a.batch / (med / 1e3), "step_ms_median": med, "step_ms": times}))


def encode(a):
    from threadpoolctl import threadpool_limits
    from sklearn.decomposition import sparse_encode

    x = np.load(a.data).astype(np.float64)
    d = np.load(a.dictionary).astype(np.float64)
    with threadpool_limits(limits=a.threads):
        t = time.perf_counter()
        if a.method == "lasso":
            c = sparse_encode(x, d, algorithm="lasso_cd", alpha=a.alpha, max_iter=10000, n_jobs=a.threads)
        else:
            c = sparse_encode(x, d, algorithm="omp", n_nonzero_coefs=a.k, n_jobs=a.threads)
        seconds = time.perf_counter() - t
    np.save(a.out, c.astype(np.float32))
    print(json.dumps({"seconds": seconds, "samples_per_s": x.shape[0] / seconds}))


def dictlearn(a):
    """scikit-learn DictionaryLearning with REFERENCE E4b's settings: fit on --train, codes of --test."""
    from threadpoolctl import threadpool_limits
    import warnings
    from sklearn.decomposition import DictionaryLearning

    warnings.filterwarnings("ignore")  # lasso_cd's convergence warnings, hundreds per fit

    xtr = np.load(a.train).astype(np.float64)
    xte = np.load(a.test).astype(np.float64)
    with threadpool_limits(limits=a.threads):
        t = time.perf_counter()
        dl = DictionaryLearning(n_components=a.atoms, alpha=0.05, fit_algorithm="cd", transform_algorithm="lasso_cd",
                                transform_alpha=0.01, positive_code=True, random_state=a.seed)
        dl.fit(xtr)
        codes = dl.transform(xte)
        seconds = time.perf_counter() - t
    np.save(a.out_codes, np.ascontiguousarray(codes, dtype=np.float32))
    np.save(a.out_dictionary, np.ascontiguousarray(dl.components_, dtype=np.float32))
    print(json.dumps({"seconds": seconds}))


def objective(a):
    x = np.load(a.data).astype(np.float64)
    d = np.load(a.dictionary).astype(np.float64)
    c = np.load(a.codes).astype(np.float64)
    r = x - c @ d
    print(json.dumps({"objective": 0.5 * float((r * r).sum()) + a.alpha * float(np.abs(c).sum())}))


def forward_throughput(a, forward, vocab_size):
    """Tokens per second of `forward(ids)` on random ids of shape (batch, context): the median of
    `repeats` timed calls after one warm-up, in inference mode."""
    import torch
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (a.batch, a.context), generator=g)
    times = []
    with torch.inference_mode():
        for i in range(a.repeats + 1):
            t = time.perf_counter()
            forward(ids)
            if i > 0:
                times.append(time.perf_counter() - t)
    print(json.dumps({"tokens_per_s": a.batch * a.context / statistics.median(times)}))


def bert(a):
    """MiniLM (BERT) forward to one layer with Hugging Face transformers, on random token ids."""
    import torch
    from transformers import BertModel
    torch.set_num_threads(a.threads)
    model = BertModel.from_pretrained(a.model, local_files_only=True).eval()
    forward = lambda ids: model(input_ids=ids, output_hidden_states=True).hidden_states[a.layer + 1]
    forward_throughput(a, forward, model.config.vocab_size)


def llama_gguf(a):
    """SmolLM2 (a Llama GGUF) forward to block `layer` with Hugging Face transformers: the same
    GGUF file, dequantised to f32 by transformers' GGUF support (PyPI's `gguf`), the blocks after
    `layer` dropped so that both sides run the same blocks; random token ids."""
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(a.threads)
    folder, name = os.path.split(os.path.abspath(a.model))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True, dtype=torch.float32).eval()
    model.model.layers = model.model.layers[:a.layer + 1]
    forward = lambda ids: model.model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[a.layer + 1]
    forward_throughput(a, forward, model.config.vocab_size)


def supports(a):
    c1 = np.load(a.codes) != 0
    c2 = np.load(a.other) != 0
    print(json.dumps({"identical_support_fraction": float((c1 == c2).all(axis=1).mean())}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--arch", choices=["topk", "topk-sparsify", "relu"], required=True)
    for name, default in [("dims", 768), ("latents", 16384), ("k", 32), ("batch", 4096), ("steps", 5), ("warmup", 2), ("threads", 2)]:
        t.add_argument(f"--{name}", type=int, default=default)
    e = sub.add_parser("encode")
    e.add_argument("--method", choices=["lasso", "omp"], required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--dictionary", required=True)
    e.add_argument("--alpha", type=float, default=0.1)
    e.add_argument("--k", type=int, default=8)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--out", required=True)
    o = sub.add_parser("objective")
    o.add_argument("--data", required=True)
    o.add_argument("--dictionary", required=True)
    o.add_argument("--codes", required=True)
    o.add_argument("--alpha", type=float, required=True)
    dl = sub.add_parser("dictlearn")
    for name in ["train", "test", "out_codes", "out_dictionary"]:
        dl.add_argument(f"--{name.replace('_', '-')}", dest=name, required=True)
    dl.add_argument("--atoms", type=int, required=True)
    dl.add_argument("--seed", type=int, default=0)
    dl.add_argument("--threads", type=int, default=2)
    b = sub.add_parser("bert")
    b.add_argument("--model", required=True)
    for name, default in [("layer", 5), ("context", 129), ("batch", 8), ("repeats", 5), ("threads", 2)]:
        b.add_argument(f"--{name}", type=int, default=default)
    lg = sub.add_parser("llama-gguf")
    lg.add_argument("--model", required=True, help="the .gguf file")
    for name, default in [("layer", 15), ("context", 129), ("batch", 8), ("repeats", 5), ("threads", 2)]:
        lg.add_argument(f"--{name}", type=int, default=default)
    s = sub.add_parser("supports")
    s.add_argument("--codes", required=True)
    s.add_argument("--other", required=True)
    a = p.parse_args()
    {"train": train, "encode": encode, "dictlearn": dictlearn, "objective": objective, "supports": supports, "bert": bert, "llama-gguf": llama_gguf}[a.cmd](a)


if __name__ == "__main__":
    main()
