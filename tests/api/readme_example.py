"""The Python API example (docs/api.md, linked from the README), run on a tiny model and data
this file makes.

`python tests/api/readme_example.py STORAGE REPORT N_TRIALS` builds them, then executes the
README's block (its settings line replaced by these arguments).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

README = Path(__file__).resolve().parents[2] / "docs" / "api.md"  # the README links it
SETTINGS = re.compile(r"^EPOCHS, N_TRIALS, STORAGE, REPORT = .*$", re.M)


def readme_block() -> str:
    """The Python API page's example (its first python block)."""
    text = README.read_text()
    return text[text.index("```python") + len("```python"):].split("```", 1)[0]


class SlowSet(TensorDataset):
    """A TensorDataset that takes 2 ms an image, so a trial lasts long enough to be killed."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        time.sleep(0.002)
        return super().__getitem__(i)


def tiny_data(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """4 classes of 1x8x8 images: the bright quadrant is the class, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def draw(n: int, kind: type = TensorDataset) -> TensorDataset:
        y = torch.randint(0, 4, (n,), generator=g)
        x = 0.3 * torch.randn(n, 1, 8, 8, generator=g)
        for i, c in enumerate(y.tolist()):
            r, q = divmod(c, 2)
            x[i, 0, 4 * r:4 * r + 4, 4 * q:4 * q + 4] += 1.0
        return kind(x, y)

    return draw(256, SlowSet), draw(128)


def tiny_model() -> nn.Module:
    """Four conv-BN-ReLU layers (the third with stride 2) and a linear head."""
    def block(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU()]

    return nn.Sequential(*block(1, 32), *block(32, 32), *block(32, 64, 2), *block(64, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 4))


def trained(model: nn.Module, loader: DataLoader, epochs: int = 3) -> nn.Module:
    """The 'trained network' a user brings (a few epochs of SGD, seeded)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model


def main(storage: str, report: str, n_trials: int) -> None:
    """Build the user's side, then run the README block."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    train_set, val_set = tiny_data()
    train_loader = DataLoader(train_set, batch_size=32, shuffle=True,
                              generator=torch.Generator().manual_seed(0))
    val_loader = DataLoader(val_set, batch_size=64)
    model = trained(tiny_model(), train_loader)
    code = SETTINGS.sub(f"EPOCHS, N_TRIALS, STORAGE, REPORT = 1, {n_trials}, {storage!r}, "
                        f"{report!r}", readme_block())
    scope = {"model": model, "train_loader": train_loader, "val_loader": val_loader}
    exec(compile(code, "README.md (Python API)", "exec"), scope)
    small = scope["small"]
    print("RESULT", sum(p.numel() for p in small.parameters()),
          scope["study"].best_trials[0].number, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
