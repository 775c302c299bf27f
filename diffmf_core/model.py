"""The DIFF-MF network, one module per box of the framework figure.

    I_ir, I_vi -> ShallowEncoder (per modality)
               -> DiffDrivenFeatureExtraction x N   (self VSS paths, shared Conv+VSS, Diff, DifferenceGuidance)
               -> ChannelExchangeModule              (cross-modal SSD with B/C swapped, omega, reweighting)
               -> SpatialExchangeModule              (column / row / concat scans at high, middle, low level)
               -> Decoder                            -> fused image in [0, 1]

Inputs are (B, 1, H, W) tensors in [0, 1] of any size: they are reflect-padded to the
network's stride and the output is cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiffMFConfig, get_config
from .modules import CrossModalSSD, VSSBlocks


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


class ShallowEncoder(nn.Module):
    """Full-resolution stem features (kept for the decoder) and the strided features the scans use."""

    def __init__(self, cfg: DiffMFConfig) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, cfg.stem_dim, 3, padding=1), _act())
        layers: list[nn.Module] = []
        ch, stride = cfg.stem_dim, cfg.stem_stride
        while stride > 1:
            layers += [nn.Conv2d(ch, cfg.dim, 3, stride=2, padding=1), _act()]
            ch, stride = cfg.dim, stride // 2
        layers += [nn.Conv2d(ch, cfg.dim, 3, padding=1), _act()]
        self.down = nn.Sequential(*layers)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stem = self.stem(img)
        return stem, self.down(stem)


def _vss(cfg: DiffMFConfig, dim: int | None = None) -> VSSBlocks:
    return VSSBlocks(dim or cfg.dim, cfg.vss_depth, cfg.d_state, cfg.ssm_ratio, cfg.dt_rank, cfg.d_conv,
                     cfg.mlp_ratio, cfg.scan_backend)


class DifferenceGuidance(nn.Module):
    """Each modality amplifies what it has and the other lacks, gated per pixel and channel.

    Diff = shared(F_ir) - shared(F_vi) is positive where IR carries more. A sigmoid gate read
    from (self features, Diff) decides how much of it to add: F_ir^e = S_ir + g_ir * Diff and
    F_vi^e = S_vi - g_vi * Diff (= S_vi + g_vi * (shared(F_vi) - shared(F_ir))).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate_ir = nn.Conv2d(2 * dim, dim, 1)
        self.gate_vi = nn.Conv2d(2 * dim, dim, 1)

    def forward(self, s_ir: torch.Tensor, s_vi: torch.Tensor, diff: torch.Tensor):
        g_ir = torch.sigmoid(self.gate_ir(torch.cat([s_ir, diff], 1)))
        g_vi = torch.sigmoid(self.gate_vi(torch.cat([s_vi, diff], 1)))
        return s_ir + g_ir * diff, s_vi - g_vi * diff


class DiffDrivenFeatureExtraction(nn.Module):
    """One of the N stages: modality-specific VSS paths steered by the shared-path difference."""

    def __init__(self, cfg: DiffMFConfig) -> None:
        super().__init__()
        self.self_ir = _vss(cfg)
        self.self_vi = _vss(cfg)
        self.shared_conv = nn.Sequential(nn.Conv2d(cfg.dim, cfg.dim, 3, padding=1), _act())
        self.shared_vss = _vss(cfg)
        self.guidance = DifferenceGuidance(cfg.dim)

    def forward(self, f_ir: torch.Tensor, f_vi: torch.Tensor):
        s_ir, s_vi = self.self_ir(f_ir), self.self_vi(f_vi)
        # The shared path has one set of weights: run both modalities as one batch.
        shared = self.shared_vss(self.shared_conv(torch.cat([f_ir, f_vi], 0)))
        sh_ir, sh_vi = shared.chunk(2, 0)
        return self.guidance(s_ir, s_vi, sh_ir - sh_vi)


class ChannelExchangeModule(nn.Module):
    """Cross-modal SSD outputs reweighted per channel by omega = Projection(concat(F_ir^e, F_vi^e)).

    F_m^c = F_m^e + omega_m * Y_m: omega (sigmoid, one weight per channel and modality)
    decides how much of the exchanged information each channel takes in.
    """

    def __init__(self, cfg: DiffMFConfig) -> None:
        super().__init__()
        self.ssd = CrossModalSSD(cfg.dim, cfg.ssm_ratio, cfg.ce_d_state, cfg.ce_heads, cfg.ce_bidirectional,
                                 cfg.d_conv, cfg.scan_backend)
        hidden = max(2 * cfg.dim // cfg.ce_reduction, 4)
        self.projection = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * cfg.dim, hidden, 1), nn.GELU(),
            nn.Conv2d(hidden, 2 * cfg.dim, 1), nn.Sigmoid(),
        )

    def forward(self, e_ir: torch.Tensor, e_vi: torch.Tensor):
        y_ir, y_vi = self.ssd(e_ir, e_vi)
        w_ir, w_vi = self.projection(torch.cat([e_ir, e_vi], 1)).chunk(2, 1)
        return e_ir + w_ir * y_ir, e_vi + w_vi * y_vi


def _channels_last(x: torch.Tensor) -> bool:
    """(B, C, H, W) over (B, H, W, C) memory, as the model's maps are when it runs channels-last."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


# The column and row scans' maps in and out. Channels-last, each is one copy into channels-last memory (or, for
# deinterleave_columns, none): torch.stack / torch.cat of such maps along W or C fall back to NCHW outputs
# through strided copies (12 ms for the three 64-channel maps at 160x128 on the 2-core CPU box), and every
# layer after them then converts back.

def interleave_columns(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) x 2 -> (B,C,H,2W) with columns a1 b1 a2 b2 ... (the figure's column scan)."""
    if _channels_last(a) and _channels_last(b):
        n, c, h, w = a.shape  # (B, H, W, 2, C) memory is (B, H, 2W, C)
        return torch.stack([a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)], 3).view(n, h, 2 * w, c).permute(0, 3, 1, 2)
    return torch.stack([a, b], dim=-1).flatten(-2)


def deinterleave_columns(x: torch.Tensor) -> torch.Tensor:
    """Inverse of interleave_columns, returning the two halves stacked on channels (B,2C,H,W)."""
    b, c, h, w2 = x.shape
    if _channels_last(x):  # (B, H, 2W, C) memory is (B, H, W, 2C): a view
        return x.permute(0, 2, 3, 1).reshape(b, h, w2 // 2, 2 * c).permute(0, 3, 1, 2)
    pair = x.view(b, c, h, w2 // 2, 2)
    return torch.cat([pair[..., 0], pair[..., 1]], 1)


def split_halves(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,2W) -> its left and right halves stacked on channels (B,2C,H,W): the row scan's map back."""
    b, c, h, w2 = x.shape
    if _channels_last(x):  # (B, H, 2, W, C) memory to (B, H, W, 2, C)
        halves = x.permute(0, 2, 3, 1).view(b, h, 2, w2 // 2, c).transpose(2, 3)
        return halves.reshape(b, h, w2 // 2, 2 * c).permute(0, 3, 1, 2)
    return torch.cat([x[..., : w2 // 2], x[..., w2 // 2:]], 1)


class CrossModalScanning(nn.Module):
    """One level of the Spatial-Exchange Module: three cross-modal token orders, each through a VSS block.

    column scan: IR and VI columns interleaved into an H x 2W map;
    row scan:    the two maps side by side, H x 2W;
    concat scan: the two maps stacked on channels, H x W with 2C channels.
    Each map gets VMamba's four directions; results are concatenated and mixed by a Linear.
    """

    def __init__(self, cfg: DiffMFConfig) -> None:
        super().__init__()
        self.column = _vss(cfg)
        self.row = _vss(cfg)
        self.concat = _vss(cfg, 2 * cfg.dim)
        self.linear = nn.Conv2d(6 * cfg.dim, cfg.dim, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        col = deinterleave_columns(self.column(interleave_columns(a, b)))
        row = split_halves(self.row(torch.cat([a, b], -1)))
        cat = self.concat(torch.cat([a, b], 1))
        return self.linear(torch.cat([col, row, cat], 1))


class SpatialExchangeModule(nn.Module):
    """Cross-modal scanning at high, middle and low resolution, merged coarse to fine."""

    def __init__(self, cfg: DiffMFConfig) -> None:
        super().__init__()
        self.levels = nn.ModuleList([CrossModalScanning(cfg) for _ in range(cfg.sem_levels)])
        self.merge = nn.ModuleList([nn.Conv2d(2 * cfg.dim, cfg.dim, 1) for _ in range(cfg.sem_levels - 2)])

    def forward(self, c_ir: torch.Tensor, c_vi: torch.Tensor) -> torch.Tensor:
        outs = []
        for i, level in enumerate(self.levels):
            a, b = (c_ir, c_vi) if i == 0 else (F.avg_pool2d(c_ir, 2**i), F.avg_pool2d(c_vi, 2**i))
            outs.append(level(a, b))
        x = outs[-1]
        for i in range(len(outs) - 2, -1, -1):
            up = F.interpolate(x, size=outs[i].shape[-2:], mode="bilinear", align_corners=False)
            x = torch.cat([outs[i], up], 1)
            if i > 0:
                x = self.merge[i - 1](x)
        return x if len(outs) > 1 else torch.cat([x, x], 1)


class Decoder(nn.Module):
    """Back to full resolution, with the stems' detail, to one channel in [0, 1].

    The upsampling path narrows to ``stem_dim`` channels before full resolution: at full
    resolution every channel costs a multiply-add per pixel, and the head only needs a
    blend weight and a detail residual there.
    """

    def __init__(self, cfg: DiffMFConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.up = nn.ModuleList()
        ch, stride = 2 * cfg.dim, cfg.stem_stride
        while stride > 1:
            out = cfg.stem_dim if stride == 2 else cfg.dim
            self.up.append(nn.Sequential(nn.Conv2d(ch, out, 3, padding=1), _act()))
            ch, stride = out, stride // 2
        self.refine = nn.Sequential(nn.Conv2d(ch + 2 * cfg.stem_dim, cfg.stem_dim, 3, padding=1), _act())
        self.head = nn.Conv2d(cfg.stem_dim, 2 if cfg.output_head == "blend" else 1, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)  # blend starts as the mean of the sources, direct as mid-grey

    def forward(self, x: torch.Tensor, stem_ir: torch.Tensor, stem_vi: torch.Tensor,
                ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        for block in self.up:
            x = F.interpolate(block(x), scale_factor=2, mode="bilinear", align_corners=False)
        out = self.head(self.refine(torch.cat([x, stem_ir, stem_vi], 1)))
        if self.cfg.output_head == "direct":
            return torch.sigmoid(out)
        w = torch.sigmoid(out[:, :1])
        r = self.cfg.residual_scale * torch.tanh(out[:, 1:])
        return (w * ir + (1 - w) * vi + r).clamp(0, 1)


class DiffMF(nn.Module):
    """DIFF-MF: fuse a thermal and a visible (luma) image, both (B, 1, H, W) in [0, 1]."""

    def __init__(self, config: DiffMFConfig | None = None) -> None:
        super().__init__()
        self.config = config or get_config("tiny")
        cfg = self.config
        self.encoder_ir = ShallowEncoder(cfg)
        self.encoder_vi = ShallowEncoder(cfg)
        self.ddfe = nn.ModuleList([DiffDrivenFeatureExtraction(cfg) for _ in range(cfg.ddfe_repeats)])
        self.channel_exchange = ChannelExchangeModule(cfg)
        self.spatial_exchange = SpatialExchangeModule(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        if ir.shape != vi.shape or ir.dim() != 4 or ir.shape[1] != 1:
            raise ValueError(f"ir and vi must both be (B, 1, H, W); got {tuple(ir.shape)} and {tuple(vi.shape)}")
        h, w = ir.shape[-2:]
        ir_p, vi_p = pad_to_multiple(ir, self.config.stride), pad_to_multiple(vi, self.config.stride)
        stem_ir, f_ir = self.encoder_ir(ir_p)
        stem_vi, f_vi = self.encoder_vi(vi_p)
        for stage in self.ddfe:
            f_ir, f_vi = stage(f_ir, f_vi)
        c_ir, c_vi = self.channel_exchange(f_ir, f_vi)
        x = self.spatial_exchange(c_ir, c_vi)
        fused = self.decoder(x, stem_ir, stem_vi, ir_p, vi_p)
        return fused[..., :h, :w]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad bottom/right to a multiple (replicate where the image is too small to reflect)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def build_model(preset: str = "tiny", **overrides) -> DiffMF:
    """A freshly initialised network from a named preset plus config overrides."""
    return DiffMF(get_config(preset, **overrides))
