"""The S2SRED network: partial-convolution encoder, dropout decoder (the paper's Fig. 1a).

Encoder EB1-EB5: partial convolution (3x3, stride 1, same padding) + LeakyReLU(0.1), with
2x2 max-pooling after EB1-EB4; constant width ``features`` (F = 64). Decoder DB1-DB4:
upsample x2 (nearest), concatenate the co-scale encoder feature, then Dropout-Conv-LReLU
layers of width ``decoder_features`` (128); DB4 tapers 192 -> 64 -> 32 -> C with a linear
last layer. Dropout is element-wise and stays on at inference (Monte-Carlo ensemble); its
masks come from an explicit :class:`torch.Generator` so runs are reproducible.
"""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PartialConv2d", "S2SNet", "MIN_SIZE_PX", "SIZE_MULTIPLE_PX"]

#: The four 2x2 poolings need sides that are multiples of 16 px (we reflect-pad up to it).
SIZE_MULTIPLE_PX = 16
#: Smallest frame accepted: EB5 then works on 4x4 px and the receptive field (~90 px)
#: still spans most of the frame; smaller frames are rejected, not padded.
MIN_SIZE_PX = 64
_SLOPE = 0.1


class PartialConv2d(nn.Conv2d):
    """3x3 partial convolution with a single-channel validity mask.

    ``out = W * (x m) * (sum(1) / sum(m)) + b`` where the window holds at least one valid
    pixel and 0 elsewhere; the returned mask is 1 where the window held a valid pixel.
    Zero padding counts as invalid, so borders are renormalised too.

    Examples
    --------
    >>> conv = PartialConv2d(1, 2)
    >>> x, m = torch.ones(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    >>> y, m2 = conv(x, m)
    >>> tuple(y.shape), bool(m2.all())
    ((1, 2, 8, 8), True)
    """

    def __init__(self, in_channels, out_channels, kernel_size=3):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                         bias=True)
        self.register_buffer("_ones", torch.ones(1, 1, kernel_size, kernel_size),
                             persistent=False)

    def forward(self, x, mask):
        with torch.no_grad():
            count = F.conv2d(mask, self._ones.to(mask.dtype), padding=self.padding)
            valid = (count > 0).to(x.dtype)
            ratio = (self._ones.numel() / count.clamp(min=1.0)).to(x.dtype) * valid
        out = F.conv2d(x * mask.to(x.dtype), self.weight, None, padding=self.padding)
        out = out * ratio + self.bias.view(1, -1, 1, 1) * valid
        return out, valid


def _dropout(x, p, generator):
    """Element-wise dropout that is always on, drawn from ``generator``."""
    if p <= 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    return x * (keep >= p).to(x.dtype) / (1.0 - p)


class _DecoderBlock(nn.Module):
    def __init__(self, in_channels, widths):
        super().__init__()
        chans = [in_channels, *widths]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1)
                                   for a, b in zip(chans[:-1], chans[1:]))

    def forward(self, x, p, generator, *, last_linear=False):
        n = len(self.convs)
        for k, conv in enumerate(self.convs):
            x = conv(_dropout(x, p, generator))
            if not (last_linear and k == n - 1):
                x = F.leaky_relu(x, _SLOPE)
        return x


class S2SNet(nn.Module):
    """Self2Self encoder-decoder with partial convolutions (see module docstring).

    Parameters
    ----------
    channels : int
        Image channels C.
    features : int
        Encoder width F (64 in the paper).
    decoder_features : int
        Decoder width (128 in the paper).
    dropout : float
        Element-wise dropout probability of every decoder convolution (0.3).

    Examples
    --------
    >>> net = S2SNet(features=4, decoder_features=8)
    >>> g = torch.Generator().manual_seed(0)
    >>> y = net(torch.rand(2, 1, 64, 64), torch.ones(2, 1, 64, 64), generator=g)
    >>> tuple(y.shape)
    (2, 1, 64, 64)
    """

    def __init__(self, channels=1, *, features=64, decoder_features=128, dropout=0.3):
        super().__init__()
        f, d = int(features), int(decoder_features)
        self.dropout = float(dropout)
        self.encoder = nn.ModuleList(
            [PartialConv2d(channels, f)] + [PartialConv2d(f, f) for _ in range(4)])
        self.db1 = _DecoderBlock(f + f, [d, d])
        self.db2 = _DecoderBlock(d + f, [d, d])
        self.db3 = _DecoderBlock(d + f, [d, d])
        half, quarter = max(d // 2, 1), max(d // 4, 1)
        self.db4 = _DecoderBlock(d + f, [half, quarter, channels])

    def forward(self, x, mask, *, generator=None):
        """Predict the image from ``x * mask`` (mask: 1 = visible), dropout always on."""
        h, w = x.shape[-2:]
        if h % SIZE_MULTIPLE_PX or w % SIZE_MULTIPLE_PX:
            raise ValueError(f"network input sides must be multiples of {SIZE_MULTIPLE_PX} px, "
                             f"got {h}x{w}")
        skips = []
        m = mask
        for k, conv in enumerate(self.encoder):
            x, m = conv(x, m)
            x = F.leaky_relu(x, _SLOPE)
            if k < 4:
                skips.append(x)
                x = F.max_pool2d(x, 2)
                m = F.max_pool2d(m, 2)
        p = self.dropout
        for block, skip in zip((self.db1, self.db2, self.db3), skips[::-1][:3]):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skip], dim=1), p, generator)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.db4(torch.cat([x, skips[0]], dim=1), p, generator, last_linear=True)
