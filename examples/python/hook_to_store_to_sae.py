"""The researcher's workflow with a model's forward hook, numpy standing in for the model so
that it runs without torch:

1. a "model" runs over batches of inputs; a forward hook streams its hidden activations into
   an activation store on disk (which may grow larger than memory);
2. a TopK sparse autoencoder trains from the store, streamed;
3. the SAE is scored against the planted truth and saved as an SAELens folder that
   `sparsecode eval --sae FOLDER`, SAELens and this package read back.

With PyTorch the hook is the same three lines:

    def hook(module, inputs, output):
        writer.append(output.detach().float().cpu().numpy().reshape(-1, output.shape[-1]))
    model.layers[6].register_forward_hook(hook)

Run: python examples/python/hook_to_store_to_sae.py [OUT_FOLDER]
"""

import os
import sys
import tempfile

import numpy as np

import sparsecode as sc


class ToyModel:
    """A 'network' whose hidden layer holds 512 sparse features in 64 dimensions: hidden =
    features @ W, with K = 4 features active per input (superposition, N >> M)."""

    def __init__(self, seed=0):
        truth = sc.synth.superposition(n_latents=512, n_features=64, k=4, n_samples=1, seed=seed)
        self.W = truth.dictionary  # (512, 64): the features' directions
        self.rng = np.random.default_rng(seed)
        self.hooks = []

    def forward(self, batch_size):
        features = np.zeros((batch_size, 512), np.float32)
        for row in features:
            row[self.rng.choice(512, 4, replace=False)] = self.rng.exponential(size=4)
        hidden = features @ self.W
        for hook in self.hooks:
            hook(hidden)
        return features


def main(out):
    model = ToyModel()
    store_path = os.path.join(out, "activations")
    truth = []
    # 1. The forward hook streams activations into the store; nothing appears until close.
    with sc.ActivationStore.create(store_path, d_in=64, overwrite=True) as writer:
        model.hooks.append(writer.append)
        for _ in range(100):
            truth.append(model.forward(batch_size=500))
    store = sc.ActivationStore(store_path)
    print(f"store: {store.shape[0]} rows of width {store.shape[1]} at {store_path}")

    # 2. Train from the store (streamed from disk, shuffled in windows), with progress.
    sae = sc.SparseAutoencoder(arch="topk", n_latents=1024, k=4, n_steps=3000, seed=0,
                               verbose=True, log_every=500)
    sae.fit(store)

    # 3. Score against the truth the toy model planted, and save for the CLI and SAELens.
    x = store.head(10_000)
    codes = sae.transform(x)
    z = np.concatenate(truth)[:10_000]
    print(f"explained variance {sae.score(x):.3f}, L0 {sc.metrics.l0(codes):.2f}, "
          f"dead {sc.metrics.dead_fraction(codes):.3f}")
    print(f"code MCC {sc.metrics.code_mcc(z, codes):.3f}, "
          f"dictionary MCC {sc.metrics.dict_mcc(model.W, sae.components_):.3f}, "
          f"features recovered at cosine 0.9: {sc.metrics.recovered_at(model.W, sae.components_):.1%}")
    folder = os.path.join(out, "sae")
    sae.save(folder, overwrite=True)
    back = sc.SparseAutoencoder.load(folder)
    assert np.array_equal(back.transform(x), codes)
    print(f"saved as an SAELens folder: {folder} (try: sparsecode eval --sae {folder} ...)")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
