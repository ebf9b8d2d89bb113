"""``simple_cnn``: small (well under 1M parameters) and good enough for MNIST-sized digits on a CPU."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from modelyard.core.errors import ValidationError
from modelyard.core.models import parameter_count
from modelyard.core.plugin_manager import PluginHost
from modelyard.plugins import simple_cnn
from modelyard.testing import single_threaded


@pytest.fixture(scope="module")
def arch():  # type: ignore[no-untyped-def]
    host = PluginHost(disabled=set())
    host.add_plugin(simple_cnn, name="simple_cnn")
    return host.architectures.get("simple_cnn")


def render_digits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-like 28x28 grey digits drawn with Pillow: random size, offset, rotation, stroke, blur and noise."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    fonts = {size: ImageFont.load_default(size=size) for size in range(14, 23)}
    images = np.zeros((count, 1, 28, 28), dtype=np.float32)
    labels = np.zeros(count, dtype=np.int64)
    for index in range(count):
        digit = rng.randrange(10)
        canvas = Image.new("L", (40, 40), 0)
        ImageDraw.Draw(canvas).text(
            (20 + rng.uniform(-3, 3), 20 + rng.uniform(-3, 3)),
            str(digit),
            fill=rng.randint(170, 255),
            font=fonts[rng.randint(14, 22)],
            anchor="mm",
            stroke_width=rng.choice((0, 0, 1)),
            stroke_fill=255,
        )
        image = canvas.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR).crop((6, 6, 34, 34))
        if rng.random() < 0.3:
            image = image.filter(ImageFilter.GaussianBlur(0.7))
        pixels = np.asarray(image, dtype=np.float32) / 255.0 + noise.normal(0.0, 0.1, (28, 28))
        images[index, 0] = (np.clip(pixels, 0.0, 1.0) - 0.5) / 0.5
        labels[index] = digit
    return torch.from_numpy(images), torch.from_numpy(labels)


def test_simple_cnn_is_well_under_a_million_parameters(arch) -> None:  # type: ignore[no-untyped-def]
    assert parameter_count(arch) < 300_000
    ten_class_grey = sum(p.numel() for p in arch.build(10, in_channels=1).parameters())
    assert ten_class_grey < 150_000


def test_simple_cnn_has_no_pretrained_weights(arch) -> None:  # type: ignore[no-untyped-def]
    assert arch.has_pretrained is False
    with pytest.raises(ValidationError, match="simple_cnn has no pretrained weights") as caught:
        arch.build(10, pretrained=True)
    assert caught.value.field == "model.pretrained"


@pytest.mark.slow  # about 10 s of CPU time
def test_simple_cnn_reaches_95_percent_on_held_out_digits_in_two_cpu_epochs(arch) -> None:  # type: ignore[no-untyped-def]
    train_x, train_y = render_digits(2000, seed=1)
    test_x, test_y = render_digits(500, seed=2)
    torch.manual_seed(0)
    model = arch.build(10, in_channels=1)
    epochs, batch = 2, 32
    steps = epochs * ((len(train_x) + batch - 1) // batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    started = time.perf_counter()
    with single_threaded():
        for _epoch in range(epochs):
            model.train()
            for start in torch.randperm(len(train_x)).split(batch):
                loss = torch.nn.functional.cross_entropy(model(train_x[start]), train_y[start])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(test_x).argmax(dim=1) == test_y).float().mean().item()
    elapsed = time.perf_counter() - started
    assert accuracy >= 0.95, f"held-out accuracy {accuracy:.3f} after {epochs} epochs ({elapsed:.1f}s)"
