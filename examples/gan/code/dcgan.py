"""A small DCGAN for scikit-learn's 8x8 handwritten digits, in pure PyTorch.

DCGAN (Radford et al., 2015) pits two convolutional networks against each other:

* the :class:`Generator` maps a latent noise vector ``z`` of shape ``[N, LATENT]`` through
  transposed convolutions (BatchNorm + ReLU) to images ``[N, 1, 8, 8]`` in ``[-1, 1]`` (tanh);
* the :class:`Discriminator` maps images ``[N, 1, 8, 8]`` through strided convolutions
  (LeakyReLU, BatchNorm on the inner layer) to one real-vs-fake logit per image, ``[N]``.

Both are trained with Adam (lr 2e-4, betas 0.5/0.999) on the binary cross-entropy GAN objective,
the generator with the usual non-saturating loss. Shapes through the networks::

    Generator:     z [N, LATENT] -> [N, 128, 2, 2] -> [N, 64, 4, 4] -> [N, 1, 8, 8]
    Discriminator: x [N, 1, 8, 8] -> [N, 64, 4, 4] -> [N, 128, 2, 2] -> logits [N]

Images come in as Tauon's prepared datasets deliver them: float or uint8 tensors shaped
``[N, 1, 8, 8]`` on a 0..255 scale (sklearn's 0..16 values rescaled). :func:`generate` returns
that format too. To judge the samples, :func:`train_classifier` fits a small CNN digits
classifier and :func:`inception_score` computes ``exp(E_x[KL(p(y|x) || p(y))])`` under it
(1 for useless samples, up to the number of classes for confident, diverse ones).

Everything is deterministic for a seed: all randomness is drawn from explicit
:class:`torch.Generator` objects (the global RNG is left untouched), and :func:`train_gan` can
resume from the ``state`` it returned, continuing exactly where it stopped. The module does no
I/O and sets no global torch options.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LATENT",
    "Discriminator",
    "Generator",
    "generate",
    "inception_score",
    "train_classifier",
    "train_gan",
]

LATENT: int = 32
"""Size of the generator's latent noise vector."""

_LR = 2e-4
_BETAS = (0.5, 0.999)
_CLASSIFIER_EPOCHS = 20


def _to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Map images on 0..255 (any dtype) to float32 in [-1, 1]."""
    return x.to(torch.float32) / 127.5 - 1.0


class Generator(nn.Module):
    """DCGAN generator: ``z [N, latent] -> images [N, 1, 8, 8]`` in ``[-1, 1]``."""

    def __init__(self, latent: int = LATENT, width: int = 64) -> None:
        super().__init__()
        self.latent = latent
        self.net = nn.Sequential(
            # [N, latent, 1, 1] -> [N, 2w, 2, 2]
            nn.ConvTranspose2d(latent, 2 * width, kernel_size=2, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            # -> [N, w, 4, 4]
            nn.ConvTranspose2d(2 * width, width, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            # -> [N, 1, 8, 8]
            nn.ConvTranspose2d(width, 1, kernel_size=4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.latent, 1, 1))


class Discriminator(nn.Module):
    """DCGAN discriminator: ``images [N, 1, 8, 8]`` in ``[-1, 1]`` -> real/fake logits ``[N]``."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            # [N, 1, 8, 8] -> [N, w, 4, 4]
            nn.Conv2d(1, width, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            # -> [N, 2w, 2, 2]
            nn.Conv2d(width, 2 * width, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2, inplace=True),
            # -> [N, 1, 1, 1]
            nn.Conv2d(2 * width, 1, kernel_size=2, stride=1, padding=0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)


def _dcgan_init(module: nn.Module, rng: torch.Generator) -> None:
    """DCGAN weight init: conv weights ~ N(0, 0.02), BatchNorm scale ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=rng)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02, generator=rng)
            nn.init.zeros_(m.bias)


def _batches(n: int, batch_size: int, rng: torch.Generator) -> list[torch.Tensor]:
    """A shuffled split of ``range(n)`` into batches; a trailing partial batch is dropped when
    there is at least one full batch (BatchNorm dislikes tiny batches)."""
    perm = torch.randperm(n, generator=rng)
    chunks = list(perm.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < batch_size:
        chunks.pop()
    return chunks


def train_gan(
    x: torch.Tensor,
    *,
    seed: int,
    epochs: int,
    batch_size: int = 64,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    state: dict[str, Any] | None = None,
) -> tuple[Generator, dict[str, Any]]:
    """Train a DCGAN on images ``x`` ``[N, 1, 8, 8]`` on 0..255 (float or uint8).

    ``epochs`` is the total number of epochs to reach: when resuming from ``state`` (a dict
    previously returned as ``info["state"]``: both networks' and both Adam optimizers'
    state_dicts, the epoch counter and the RNG state) training continues from the saved epoch up
    to ``epochs``, and gives exactly the result an uninterrupted run would have. After each epoch
    ``on_epoch(epoch, {"generatorLoss": ..., "discriminatorLoss": ...})`` is called with the
    1-based epoch number and the epoch's mean losses (the discriminator loss is the sum of its
    real and fake BCE terms). Networks live on ``x.device``; noise is drawn on the CPU.

    Returns ``(generator, info)`` where ``info`` has ``"state"`` (a snapshot to resume from),
    ``"epochs"`` (epochs completed in total) and ``"history"`` (the metrics of the epochs run
    by this call).
    """
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise ValueError(f"expected images shaped [N, 1, 8, 8], got {tuple(x.shape)}")
    if epochs < 0 or batch_size < 1:
        raise ValueError("epochs must be >= 0 and batch_size >= 1")
    device = x.device
    data = _to_unit_range(x)

    rng = torch.Generator().manual_seed(seed)
    gen, disc = Generator(), Discriminator()
    _dcgan_init(gen, rng)
    _dcgan_init(disc, rng)
    gen.to(device)
    disc.to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=_LR, betas=_BETAS)
    opt_d = torch.optim.Adam(disc.parameters(), lr=_LR, betas=_BETAS)

    start = 0
    if state is not None:
        gen.load_state_dict(state["generator"])
        disc.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["optimizerG"])
        opt_d.load_state_dict(state["optimizerD"])
        rng.set_state(state["rng"])
        start = int(state["epoch"])

    gen.train()
    disc.train()
    history: list[dict[str, float]] = []
    for epoch in range(start + 1, epochs + 1):
        g_total = d_total = 0.0
        batches = _batches(len(data), batch_size, rng)
        for idx in batches:
            real = data[idx.to(device)]
            n = real.shape[0]
            ones = torch.ones(n, device=device)
            zeros = torch.zeros(n, device=device)
            z = torch.randn(n, LATENT, generator=rng).to(device)
            fake = gen(z)

            # Discriminator: push real logits up, fake logits down.
            opt_d.zero_grad(set_to_none=True)
            d_loss = F.binary_cross_entropy_with_logits(
                disc(real), ones
            ) + F.binary_cross_entropy_with_logits(disc(fake.detach()), zeros)
            d_loss.backward()
            opt_d.step()

            # Generator: non-saturating loss, make the discriminator call fakes real.
            opt_g.zero_grad(set_to_none=True)
            g_loss = F.binary_cross_entropy_with_logits(disc(fake), ones)
            g_loss.backward()
            opt_g.step()

            g_total += g_loss.item()
            d_total += d_loss.item()
        metrics = {
            "generatorLoss": g_total / len(batches),
            "discriminatorLoss": d_total / len(batches),
        }
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        start = epoch

    snapshot = {
        "generator": gen.state_dict(),
        "discriminator": disc.state_dict(),
        "optimizerG": opt_g.state_dict(),
        "optimizerD": opt_d.state_dict(),
        "rng": rng.get_state(),
        "epoch": start,
        "seed": seed,
    }
    return gen, {"state": copy.deepcopy(snapshot), "epochs": start, "history": history}


@torch.no_grad()
def generate(generator: Generator, n: int, seed: int) -> torch.Tensor:
    """Sample ``n`` images ``[n, 1, 8, 8]`` as uint8 on 0..255 (on the CPU), deterministically
    for ``seed``. Runs the generator in eval mode and restores its previous mode."""
    device = next(generator.parameters()).device
    z = torch.randn(n, generator.latent, generator=torch.Generator().manual_seed(seed))
    was_training = generator.training
    generator.eval()
    try:
        out = generator(z.to(device))
    finally:
        generator.train(was_training)
    return ((out + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()


@torch.no_grad()
def inception_score(images_0_255: torch.Tensor, classifier: nn.Module) -> float:
    """The Inception Score ``exp(E_x[KL(p(y|x) || p(y))])`` of images ``[N, 1, 8, 8]`` on 0..255
    under ``classifier`` (which takes 0..255 input and returns logits). It is 1 when every
    prediction is the same or uninformative, and at most the number of classes."""
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    try:
        logits = classifier(images_0_255.to(device=device, dtype=torch.float32))
    finally:
        classifier.train(was_training)
    log_p = F.log_softmax(logits.to(torch.float64), dim=1)  # log p(y|x), [N, C]
    log_marginal = torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])  # log p(y), [C]
    kl = (log_p.exp() * (log_p - log_marginal)).sum(dim=1)
    return float(kl.mean().exp())


class _DigitsClassifier(nn.Module):
    """Small CNN: ``[N, 1, 8, 8]`` on 0..255 -> class logits ``[N, classes]``."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # -> [N, 64, 4, 4]
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(_to_unit_range(x))


def train_classifier(x: torch.Tensor, y: torch.Tensor, *, seed: int) -> nn.Module:
    """Train a small CNN digits classifier on ``x`` ``[N, 1, 8, 8]`` (0..255) and integer labels
    ``y`` ``[N]``; a few seconds on one CPU core. Used only to score the GAN. Returned in eval
    mode, on ``x.device``."""
    device = x.device
    classes = max(int(y.max()) + 1, 2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _DigitsClassifier(classes)
    model.to(device)
    rng = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data, labels = x.to(torch.float32), y.to(device=device, dtype=torch.long)
    model.train()
    for _ in range(_CLASSIFIER_EPOCHS):
        for idx in torch.randperm(len(data), generator=rng).split(64):
            idx = idx.to(device)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(data[idx]), labels[idx]).backward()
            opt.step()
    return model.eval()
