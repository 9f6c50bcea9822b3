"""Multiply-accumulate count of a model's forward pass, from forward hooks on Conv2d and Linear.

FLOPs are reported as 2 x MACs. Other layers (BN, activations, upsampling) are ignored: on every
model here they are a few percent of the convolutions.
"""

from __future__ import annotations

import torch
from torch import nn


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    total = 0

    def conv_hook(module: nn.Conv2d, inputs, output: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
        total += int(output.numel() * k)

    def linear_hook(module: nn.Linear, inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += int(output.numel() * module.in_features)

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total // example.shape[0]  # per image


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs per image (2 x MACs of Conv2d and Linear layers)."""
    return 2 * count_macs(model, example)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
