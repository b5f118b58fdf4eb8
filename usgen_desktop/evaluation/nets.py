"""The two small networks of the evaluation, built inside functions so that importing this
module does not import torch."""

from __future__ import annotations

from typing import Any


def build_unet(n_classes: int, base: int = 16, in_channels: int = 1) -> Any:
    """A plain 4-level U-Net (3 poolings): base 16 has about 0.47M parameters, base 32 1.9M.
    Input sides must be multiples of 8."""
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
        )

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            ch = [base, base * 2, base * 4, base * 8]
            self.enc = nn.ModuleList([block(in_channels, ch[0]), block(ch[0], ch[1]),
                                      block(ch[1], ch[2])])
            self.mid = block(ch[2], ch[3])
            self.up = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2)
                                     for i in (2, 1, 0)])
            self.dec = nn.ModuleList([block(ch[i] * 2, ch[i]) for i in (2, 1, 0)])
            self.head = nn.Conv2d(ch[0], n_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for enc in self.enc:
                x = enc(x)
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = self.mid(x)
            for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
                x = dec(torch.cat([up(x), skip], dim=1))
            return self.head(x)

    return UNet()


def build_classifier(base: int = 16) -> Any:
    """A small CNN (about 60k parameters) giving one real-vs-synthetic logit per image.

    GroupNorm, not BatchNorm: a fold trains for few steps, too few for BatchNorm's running
    statistics to settle, and the eval-mode scores then drift from what was learnt."""
    from torch import nn

    layers: list[nn.Module] = []
    cin = 1
    for cout in (base, base * 2, base * 4, base * 4):
        layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                   nn.GroupNorm(4, cout), nn.ReLU(True)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1)]
    return nn.Sequential(*layers)


def count_parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))
