"""Image-fusion quality metrics, with the conventions behind the published IVF tables.

The primary columns reproduce the CDDFuse evaluator (Zhaozixiang1228/MMIF-CDDFuse,
``utils/Evaluator.py``), which is what the CDDFuse / EMMA / DDFM tables were computed with,
so a number here can be put next to a number in those papers. Every input is a 2-D gray
image holding 0..255 (see ``diffmf_training.evaluate.read_gray`` for how files become
such arrays); nothing is normalised to [0, 1]. ``A`` is the infrared and ``B`` the visible
source, ``F`` the fused image; every two-source metric is symmetric in A and B.

    EN     entropy of F in bits, 256-bin histogram of round(F)
    SD     population standard deviation of F
    SF     spatial frequency: sqrt(mean(row diff^2) + mean(column diff^2))
    AG     average gradient: mean of sqrt((Gx^2 + Gy^2) / 2), np.gradient differences, / (H*W)
    MI     MI(F, A) + MI(F, B) in NATS, joint histogram over the grey values
    SCD    corr(A, F - B) + corr(B, F - A)        (Aslantas & Bendes 2015)
    VIF    vifp(A, F) + vifp(B, F): Sheikh-Bovik pixel-domain VIF, 4 scales (range ~0..2)
    Qabf   Xydeas-Petrovic edge preservation, with the MATLAB quirk where gA == gF (below)
    SSIM   ssim(F, A) + ssim(F, B), 7x7 uniform window, data_range 2 (range ..2)
    PSNR   10 log10(max(F)^2 / MSE): the peak is F's maximum, not 255
    CC     (corr(A, F) + corr(B, F)) / 2
    Nabf   Shreyamsha Kumar's modified fusion-artifact measure (lower is better)

Extra columns: ``MSE`` = (mse(A, F) + mse(B, F)) / 2 on 0..255; ``SSIM_avg255`` = the mean of
the two SSIMs with data_range 255 (a conventional SSIM, range ..1); ``MI_bits`` = MI / ln 2.

Why the odd choices are kept: SSIM with data_range 2 is what scikit-image 0.19 silently used
for float32 input in the reference code, MI in nats is sklearn's unit, and the Qabf quirk
(where the source and fused edge strengths are equal the strength ratio is set to the fused
edge strength, not 1) comes from the MATLAB original. Reproducing them is the point.

Arithmetic is float64, except Qabf and SSIM, which run in float32 as in the reference code
(elsewhere its float32 arithmetic moves the values by ~1e-6 relative, well inside the stated
tolerance). Nabf is not in the CDDFuse evaluator: it follows
B. K. Shreyamsha Kumar's ``analysis_nabf(f, I1, I2)`` (as shipped in Linfeng Tang's MATLAB
evaluation code) called in its declared order, fused image first, on 0..255 data; its edge
threshold (Td = 2 on Sobel/8 gradients) makes it depend on that range.

Undefined cases: CC and SCD of a constant image are NaN (0/0); PSNR is +inf when F equals
both sources; VIF counts a source with no detail at any scale as 1.0 (the reference's rule);
Qabf is NaN when neither source has an edge, e.g. all black (Nabf is then 0: its weights never vanish).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from skimage.metrics import structural_similarity

PRIMARY_COLUMNS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "PSNR", "CC", "Nabf")
VARIANT_COLUMNS = ("MSE", "SSIM_avg255", "MI_bits")
METRIC_COLUMNS = PRIMARY_COLUMNS + VARIANT_COLUMNS

# Direction of "better" for every column, used to mark the best method in reports.
LOWER_IS_BETTER = frozenset({"Nabf", "MSE"})

# VIF needs a 17x17 window at full scale and three 'valid' filter + decimate steps.
MIN_SIDE = 41


def _as_float(img: np.ndarray, name: str = "image") -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D gray image, got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


def _check_triplet(f, a, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f, a, b = _as_float(f, "fused"), _as_float(a, "source A"), _as_float(b, "source B")
    if not f.shape == a.shape == b.shape:
        raise ValueError(f"shape mismatch: fused {f.shape}, A {a.shape}, B {b.shape}")
    return f, a, b


# --------------------------------------------------------------------------- single-image metrics


def entropy(f: np.ndarray) -> float:
    """EN: Shannon entropy in bits of the 256-bin histogram of round(F) (clipped to 0..255)."""
    levels = np.clip(np.round(_as_float(f)), 0, 255).astype(np.uint8).ravel()
    p = np.bincount(levels, minlength=256) / levels.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def standard_deviation(f: np.ndarray) -> float:
    """SD: population standard deviation (ddof 0) of the grey values."""
    return float(np.std(_as_float(f)))


def spatial_frequency(f: np.ndarray) -> float:
    """SF: sqrt of the summed mean squared horizontal and vertical neighbour differences."""
    f = _as_float(f)
    return float(np.sqrt(np.mean(np.diff(f, axis=1) ** 2) + np.mean(np.diff(f, axis=0) ** 2)))


def average_gradient(f: np.ndarray) -> float:
    """AG: mean over all H*W pixels of sqrt((Gx^2 + Gy^2) / 2), central differences inside."""
    gy, gx = np.gradient(_as_float(f))
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2.0)))


# --------------------------------------------------------------------------- statistics of two images


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx = x - x.mean()
    dy = y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.sum(dx * dy) / np.sqrt(np.sum(dx * dx) * np.sum(dy * dy)))


def _labels(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer labels of the distinct values of x (grey levels directly when they are 0..255)."""
    flat = x.ravel()
    if flat.min() >= 0 and flat.max() <= 255 and np.array_equal(flat, np.round(flat)):
        return flat.astype(np.intp), 256
    values, inverse = np.unique(flat, return_inverse=True)
    return inverse.ravel(), len(values)


def mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """MI(x, y) in nats from the joint histogram of the distinct values (= sklearn's mutual_info_score)."""
    x, y = _as_float(x), _as_float(y)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {y.shape}")
    lx, nx = _labels(x)
    ly, ny = _labels(y)
    joint = np.bincount(lx * ny + ly, minlength=nx * ny).reshape(nx, ny).astype(np.float64)
    n = joint.sum()
    px = joint.sum(axis=1)
    py = joint.sum(axis=0)
    i, j = np.nonzero(joint)
    nij = joint[i, j]
    mi = np.sum(nij / n * (np.log(nij) + np.log(n) - np.log(px[i]) - np.log(py[j])))
    return float(max(mi, 0.0))


def mse(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """MSE: mean of the two source-to-fused mean squared errors, on 0..255."""
    f, a, b = _check_triplet(f, a, b)
    return float((np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2.0)


def psnr(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB with F's own maximum as the peak; +inf when F equals both sources."""
    f, a, b = _check_triplet(f, a, b)
    err = mse(f, a, b)
    with np.errstate(divide="ignore"):
        return float(10.0 * np.log10(np.max(f) ** 2 / err)) if err > 0 else math.inf


def correlation_coefficient(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """CC: mean Pearson correlation of each source with F (NaN if an image is constant)."""
    f, a, b = _check_triplet(f, a, b)
    return (_pearson(a, f) + _pearson(b, f)) / 2.0


def scd(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SCD: corr(A, F - B) + corr(B, F - A), the sum of the correlations of differences."""
    f, a, b = _check_triplet(f, a, b)
    return _pearson(a, f - b) + _pearson(b, f - a)


def mutual_information_sum(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """MI: MI(F, A) + MI(F, B) in nats."""
    f, a, b = _check_triplet(f, a, b)
    return mutual_information(f, a) + mutual_information(f, b)


# --------------------------------------------------------------------------- SSIM


def ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """scikit-image SSIM with its defaults (7x7 uniform window, K1 0.01, K2 0.03, sample covariance).

    Evaluated on float32 copies, as in the reference code (scikit-image keeps float32 input in float32).
    """
    x, y = _as_float(x), _as_float(y)
    return float(structural_similarity(x.astype(np.float32), y.astype(np.float32), data_range=data_range))


def ssim_sum(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SSIM: ssim(F, A) + ssim(F, B) with data_range 2, as the reference evaluator computes it."""
    f, a, b = _check_triplet(f, a, b)
    return ssim(f, a, 2.0) + ssim(f, b, 2.0)


def ssim_avg255(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SSIM_avg255: (ssim(F, A) + ssim(F, B)) / 2 with data_range 255, the conventional scale."""
    f, a, b = _check_triplet(f, a, b)
    return (ssim(f, a, 255.0) + ssim(f, b, 255.0)) / 2.0


# --------------------------------------------------------------------------- VIF


def _gaussian_taps(n: int) -> np.ndarray:
    """1-D factor of the normalised n x n Gaussian (sigma n/5) of vifp_mscale; its 2-D form is separable."""
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * (n / 5.0) ** 2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """2-D 'valid' filtering with the separable window (symmetric, so correlation = convolution)."""
    r = (len(taps) - 1) // 2
    out = cv2.sepFilter2D(img, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REPLICATE)
    return out[r : img.shape[0] - r, r : img.shape[1] - r]


_VIF_SIGMA_NSQ = 2.0
_VIF_EPS = 1e-10


def _vif_scale_terms(mu1, s1_raw, mu2, s2, cross) -> tuple[float, float]:
    """Numerator and denominator sums of one scale, with vifp_mscale's clamping rules in order."""
    eps = _VIF_EPS
    s1 = np.maximum(s1_raw - mu1 * mu1, 0.0)
    s12 = cross - mu1 * mu2
    g = s12 / (s1 + eps)
    sv = s2 - g * s12
    flat1 = s1 < eps
    g[flat1] = 0.0
    sv[flat1] = s2[flat1]
    s1[flat1] = 0.0
    flat2 = s2 < eps
    g[flat2] = 0.0
    sv[flat2] = 0.0
    neg = g < 0
    sv[neg] = s2[neg]
    g[neg] = 0.0
    sv[sv <= eps] = eps
    num = np.sum(np.log10(1.0 + g * g * s1 / (sv + _VIF_SIGMA_NSQ)))
    den = np.sum(np.log10(1.0 + s1 / _VIF_SIGMA_NSQ))
    return float(num), float(den)


def _vifp_many(refs: list[np.ndarray], dist: np.ndarray) -> list[float]:
    """vifp(ref, dist) for several references sharing one distorted image (its statistics computed once)."""
    h, w = dist.shape
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"VIF needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, got {w}x{h}")
    refs = [np.asarray(r, dtype=np.float64) for r in refs]
    dist = np.asarray(dist, dtype=np.float64)
    nums = [0.0] * len(refs)
    dens = [0.0] * len(refs)
    for scale in range(1, 5):
        taps = _gaussian_taps(2 ** (5 - scale) + 1)
        if scale > 1:
            refs = [_filter_valid(r, taps)[::2, ::2] for r in refs]
            dist = _filter_valid(dist, taps)[::2, ::2]
        mu2 = _filter_valid(dist, taps)
        s2 = np.maximum(_filter_valid(dist * dist, taps) - mu2 * mu2, 0.0)
        for k, ref in enumerate(refs):
            mu1 = _filter_valid(ref, taps)
            num, den = _vif_scale_terms(
                mu1, _filter_valid(ref * ref, taps), mu2, s2, _filter_valid(ref * dist, taps)
            )
            nums[k] += num
            dens[k] += den
    out = []
    for num, den in zip(nums, dens):
        with np.errstate(invalid="ignore", divide="ignore"):
            v = np.float64(num) / np.float64(den)
        out.append(1.0 if np.isnan(v) else float(v))
    return out


def vifp(ref: np.ndarray, dist: np.ndarray) -> float:
    """Pixel-domain multiscale VIF of dist against ref (port of the idea of vifp_mscale.m)."""
    ref, dist = _as_float(ref, "reference"), _as_float(dist, "distorted")
    if ref.shape != dist.shape:
        raise ValueError(f"shape mismatch: {ref.shape} vs {dist.shape}")
    return _vifp_many([ref], dist)[0]


def vif(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """VIF: vifp(A, F) + vifp(B, F)."""
    f, a, b = _check_triplet(f, a, b)
    return sum(_vifp_many([a, b], f))


# --------------------------------------------------------------------------- Qabf and Nabf

# Sobel kernels, written the way the reference convolves them (scipy convolve2d 'same', zero
# padding); cv2.filter2D correlates, so it gets them flipped.
_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])


def _qabf_edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength and orientation in float32; orientation is pi/2 wherever the x-gradient is 0."""
    img = img.astype(np.float32)
    sx = cv2.filter2D(img, -1, np.flip(_SOBEL_X).astype(np.float32), borderType=cv2.BORDER_CONSTANT)
    sy = cv2.filter2D(img, -1, np.flip(_SOBEL_Y).astype(np.float32), borderType=cv2.BORDER_CONSTANT)
    strength = np.sqrt(sx * sx + sy * sy)
    angle = np.full(img.shape, np.pi / 2, dtype=np.float32)
    nz = sx != 0
    angle[nz] = np.arctan(sy[nz] / sx[nz])
    return strength, angle


def _qabf_preservation(g_src, a_src, g_f, a_f) -> np.ndarray:
    """Edge preservation of one source in F. Quirk kept: where g_src == g_f the ratio is g_f, not 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(g_src > g_f, g_f / g_src, np.where(g_src < g_f, g_src / g_f, g_f))
    orient = 1.0 - np.abs(a_src - a_f) / np.float32(np.pi / 2)
    q_g = np.float32(0.9994) / (1.0 + np.exp(np.float32(-15.0) * (ratio - np.float32(0.5))))
    q_a = np.float32(0.9879) / (1.0 + np.exp(np.float32(-22.0) * (orient - np.float32(0.8))))
    return q_g * q_a


def qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Qabf: edge preservation of A and B in F, weighted by the source edge strengths (0..1).

    Computed in float32 like the reference (the sums use numpy's pairwise summation).
    """
    f, a, b = _check_triplet(f, a, b)
    g_a, a_a = _qabf_edges(a)
    g_b, a_b = _qabf_edges(b)
    g_f, a_f = _qabf_edges(f)
    num = np.sum(_qabf_preservation(g_a, a_a, g_f, a_f) * g_a + _qabf_preservation(g_b, a_b, g_f, a_f) * g_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.float64(num) / np.float64(np.sum(g_a + g_b)))


def _nabf_edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel/8 edge strength and orientation, mirrored borders (c b|a b c); orientation 0 where flat."""
    gx = cv2.filter2D(img, cv2.CV_64F, _SOBEL_X / 8.0, borderType=cv2.BORDER_REFLECT_101)
    gy = cv2.filter2D(img, cv2.CV_64F, -_SOBEL_Y / 8.0, borderType=cv2.BORDER_REFLECT_101)
    strength = np.sqrt(gx * gx + gy * gy)
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.arctan(gx / gy)  # gy == 0 gives +-pi/2, as atan(x/0) does in MATLAB
    angle[(gx == 0) & (gy == 0)] = 0.0
    return strength, angle


def _nabf_preservation(g_src, a_src, g_f, a_f) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((g_src == 0) | (g_f == 0), 0.0, np.where(g_src > g_f, g_f / g_src, g_src / g_f))
    orient = np.abs(np.abs(a_src - a_f) - np.pi / 2) * 2 / np.pi
    q_g = 0.9999 / (1.0 + np.exp(-19.0 * (ratio - 0.5)))
    q_a = 0.9995 / (1.0 + np.exp(-22.0 * (orient - 0.5)))
    return np.sqrt(q_g * q_a)


def nabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Nabf: fusion artifacts, i.e. edges in F stronger than in both sources, weighted by lost preservation.

    Shreyamsha Kumar's modification of Petrovic's N_abf (Td = 2, wt_min = 0.001, L = 1.5), in
    the declared argument order (fused first). 0 means no artifacts; lower is better.
    """
    f, a, b = _check_triplet(f, a, b)
    g_a, a_a = _nabf_edges(a)
    g_b, a_b = _nabf_edges(b)
    g_f, a_f = _nabf_edges(f)
    w_a = np.where(g_a >= 2.0, g_a**1.5, 0.001)
    w_b = np.where(g_b >= 2.0, g_b**1.5, 0.001)
    artifact = (g_f > g_a) & (g_f > g_b)
    loss = (1.0 - _nabf_preservation(g_a, a_a, g_f, a_f)) * w_a + (
        1.0 - _nabf_preservation(g_b, a_b, g_f, a_f)
    ) * w_b
    return float(np.sum(loss[artifact]) / np.sum(w_a + w_b))


# --------------------------------------------------------------------------- all at once


def fusion_metrics(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> dict[str, float]:
    """Every column of METRIC_COLUMNS for one fused image and its infrared (A) and visible (B) sources.

    Inputs are 2-D arrays of 0..255 grey values (any numeric dtype), at least MIN_SIDE pixels a side.
    """
    f, a, b = _check_triplet(fused, ir, vi)
    if min(f.shape) < MIN_SIDE:
        raise ValueError(
            f"images must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {f.shape[1]}x{f.shape[0]}"
        )
    mi_nats = mutual_information(f, a) + mutual_information(f, b)
    err = mse(f, a, b)
    with np.errstate(divide="ignore"):
        peak_db = float(10.0 * np.log10(np.max(f) ** 2 / err)) if err > 0 else math.inf
    return {
        "EN": entropy(f),
        "SD": standard_deviation(f),
        "SF": spatial_frequency(f),
        "AG": average_gradient(f),
        "MI": mi_nats,
        "SCD": scd(f, a, b),
        "VIF": sum(_vifp_many([a, b], f)),
        "Qabf": qabf(f, a, b),
        "SSIM": ssim_sum(f, a, b),
        "PSNR": peak_db,
        "CC": correlation_coefficient(f, a, b),
        "Nabf": nabf(f, a, b),
        "MSE": err,
        "SSIM_avg255": ssim_avg255(f, a, b),
        "MI_bits": mi_nats / math.log(2.0),
    }
