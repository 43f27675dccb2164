"""The standard error of a difference between two pruned networks' validation accuracies.

Two networks scored on the same n validation images differ by (wrong_a - wrong_b) / n; its SE is
sqrt((p10 + p01 - (p10 - p01)^2) / n) with p10, p01 the shares of images only one gets right
(the paired, McNemar form). This script fine-tunes the uniform recipe and Torch-Pruning's global
allocations at one budget with the proxy, then prints each pair's SE at this split's size and
at the sizes a user might choose. `python scripts/val_se.py [--c-flops 0.1] [--epochs 1]`.
"""

from __future__ import annotations

import argparse
import itertools
import math

import numpy as np
import torch

from evoprune.core.machine import machine
from evoprune.network.pruning import prune_channels
from evoprune.searching import BaseConfig, SearchConfig
from evoprune.searching.objective import ProxyConfig
from evoprune.searching.run import _baselines, load_base
from evoprune.spaces import PruningSpace
from evoprune.training.engine import _autocast


def predictions(model: torch.nn.Module, data) -> np.ndarray:
    """Whether each validation image is classified right."""
    model.eval()
    right = []
    with torch.no_grad(), _autocast(data):
        for x, y in data.val_batches(512):
            right.append((model(x).argmax(1) == y).cpu().numpy())
    return np.concatenate(right)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--c-flops", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=1)
    a = p.parse_args()
    config = SearchConfig(
        space=PruningSpace(c_flops=a.c_flops), proxy=ProxyConfig(epochs=a.epochs, batch_size=128),
        base=BaseConfig(model="resnet20", dataset="fashion-mnist", residual=True, epochs=15,
                        val_size=5000, train_size=10000,
                        checkpoint="studies/checkpoints/resnet20-fashion-mnist-ffe7be094149.pt"),
        storage="sqlite:///studies/fashion-mnist/fashion-mnist.db", device="cpu")
    loaded = load_base(config, None, lambda _e: None)
    ctx = loaded.context
    nets = {"uniform": loaded.decoder.uniform().kept[0]}
    nets.update({b.criterion: np.asarray(b.kept) for b in
                 _baselines(config, ctx, loaded.decoder, loaded.batches, lambda _e: None)})
    right = {}
    for name, kept in nets.items():
        pruned = prune_channels(ctx.base, ctx.units, kept, seed=0)
        ctx.finetune(pruned, 0)
        right[name] = predictions(pruned, loaded.batches)
        print(f"{name:9} val acc {100 * right[name].mean():.2f}%", flush=True)
    n = len(next(iter(right.values())))
    print(f"\npaired SE of a difference in validation accuracy (pp), n = {n}; "
          f"at 10,000 and 15,000 images (scaled by sqrt(n)); machine: {machine()}")
    ses = []
    for x, y in itertools.combinations(right, 2):
        p10 = float(np.mean(right[x] & ~right[y]))
        p01 = float(np.mean(~right[x] & right[y]))
        se = 100 * math.sqrt((p10 + p01 - (p10 - p01) ** 2) / n)
        ses.append(se)
        print(f"{x:>9} - {y:<9} diff {100 * (p10 - p01):+.2f}  discordant {100 * (p10 + p01):.1f}%  "
              f"SE {se:.2f}  (10k {se * math.sqrt(n / 1e4):.2f}, 15k {se * math.sqrt(n / 1.5e4):.2f})")
    print(f"median SE {np.median(ses):.2f} pp at n = {n}")


if __name__ == "__main__":
    main()
