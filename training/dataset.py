"""Training pairs: infrared/visible images matched by file name, cropped and flipped/rotated together.

Layout (the seed's): every dataroot holds ``<A_dir>/`` (infrared) and ``<B_dir>/`` (visible) with the
same file names (the extension may differ). Several dataroots are mixed into one set.

* Every file is read once when the set is built, so unpaired, unreadable and size-mismatched files
  are reported together in one error (with how many pairs were fine) before any training starts.
* Pixels: 8-bit and 16-bit files, scaled to [0, 1] by their bit depth (uint16 / 65535, the same rule
  the FusionEngine applies at inference). RGB images become their luma Y (SeAFusion BT.601 weights),
  the channel the network fuses.
* Samples: a random ``H_size`` crop at the same place in both images (an image smaller than the crop
  is reflect-padded), then one of the 8 flips/rotations. The randomness of a sample is a function of
  (seed, position in the sample stream) only, so a resumed run and a run with any number of loader
  workers see exactly the same batches.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from diffmf_core.colour import luma
from diffmf_core.images import ImageReadError, read_image, to_float01

log = logging.getLogger("diffmf_training")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"})
AUGMENT_MODES = 8


class DatasetError(ValueError):
    """Training data that cannot be used; the message lists the files at fault and how many pairs were fine."""


@dataclass(frozen=True)
class Pair:
    """One registered infrared/visible pair; ``name`` is ``<dataroot folder name>/<stem>``."""

    name: str
    ir: Path
    vi: Path


# ----------------------------------------------------------------------------- finding pairs


def _images_by_stem(folder: Path, problems: list[str]) -> dict[str, Path]:
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(p.stem, []).append(p)
    for stem, paths in found.items():
        if len(paths) > 1:
            problems.append(f"{folder}: several images for '{stem}' ({', '.join(p.name for p in paths)})")
    return {stem: paths[0] for stem, paths in found.items()}


def read_pattern_list(patterns: Sequence[str]) -> list[str]:
    """Patterns as given; ``@FILE`` entries expand to the file's lines (blank lines and # comments skipped)."""
    out: list[str] = []
    for pattern in patterns:
        if pattern.startswith("@"):
            listing = Path(pattern[1:])
            if not listing.is_file():
                raise DatasetError(f"pattern list {listing} does not exist")
            lines = (ln.split("#", 1)[0].strip() for ln in listing.read_text(encoding="utf-8").splitlines())
            out += [ln for ln in lines if ln]
        else:
            out.append(pattern)
    return out


def pair_matches(pair: Pair, pattern: str) -> bool:
    """A glob matches a pair by its stem, either file name, or ``<dataroot folder name>/<stem>``."""
    keys = (pair.name.rsplit("/", 1)[-1], pair.ir.name, pair.vi.name, pair.name)
    return any(fnmatch.fnmatchcase(key, pattern) for key in keys)


def select_pairs(pairs: Sequence[Pair], include: Sequence[str] = (), exclude: Sequence[str] = (),
                 source: str = "datasets.train") -> list[Pair]:
    """Keep pairs matching any ``include`` glob (all when empty), then drop those matching any ``exclude``.

    An include pattern that matches no pair is an error naming ``source`` (a typo must not silently
    shrink the set); an exclude pattern that matches none is logged as a warning (the data may
    already be without those pairs, e.g. a packed training split).
    """
    include, exclude = read_pattern_list(include), read_pattern_list(exclude)
    dead = [p for p in include if not any(pair_matches(pair, p) for pair in pairs)]
    if dead:
        label = source if source.startswith("--") else f"{source}.include"
        raise DatasetError(f"{label}: pattern(s) {', '.join(repr(p) for p in dead)} match none of the "
                           f"{len(pairs)} pairs (patterns match a stem, a file name or <root>/<stem>)")
    for pattern in exclude:
        if not any(pair_matches(pair, pattern) for pair in pairs):
            log.warning("%s.exclude: pattern %r matches none of the %d pairs: nothing left out by it",
                        source, pattern, len(pairs))
    kept = [p for p in pairs if not include or any(pair_matches(p, pat) for pat in include)]
    return [p for p in kept if not any(pair_matches(p, pat) for pat in exclude)]


def match_folder_pairs(ir_dir: Path, vi_dir: Path, prefix: str = "") -> tuple[list[Pair], list[str]]:
    """Pairs of two folders by file stem, and a line for every file without a partner (or stem used twice)."""
    problems: list[str] = []
    ir, vi = _images_by_stem(ir_dir, problems), _images_by_stem(vi_dir, problems)
    problems += [f"{ir[s]} has no partner in {vi_dir}" for s in sorted(set(ir) - set(vi))]
    problems += [f"{vi[s]} has no partner in {ir_dir}" for s in sorted(set(vi) - set(ir))]
    return [Pair(f"{prefix}{s}", ir[s], vi[s]) for s in sorted(set(ir) & set(vi))], problems


def find_pairs(dataroots: Sequence[str | os.PathLike], a_dir: str = "ir", b_dir: str = "vi") -> list[Pair]:
    """All pairs under the dataroots, matched by file stem; raises DatasetError listing unpaired files."""
    pairs: list[Pair] = []
    problems: list[str] = []
    for root in dataroots:
        root = Path(root)
        ir_dir, vi_dir = root / a_dir, root / b_dir
        missing = [str(d) for d in (ir_dir, vi_dir) if not d.is_dir()]
        if missing:
            problems.append(f"missing folder {' and '.join(missing)}")
            continue
        found, unpaired = match_folder_pairs(ir_dir, vi_dir, f"{root.name}/")
        pairs += found
        problems += unpaired
    if problems:
        raise DatasetError(_problem_report("unpaired or missing", problems, len(pairs)))
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise DatasetError(f"two dataroots share a folder name, so pair names collide: {', '.join(twice[:5])}")
    return pairs


def _problem_report(kind: str, problems: list[str], fine: int, limit: int = 8) -> str:
    shown = "; ".join(problems[:limit])
    more = f"; ... ({len(problems) - limit} more)" if len(problems) > limit else ""
    return f"{len(problems)} {kind} file problem(s) ({fine} pair(s) fine): {shown}{more}"


# ----------------------------------------------------------------------------- pixels


def as_luma(img: np.ndarray) -> np.ndarray:
    """A read image in the form the network trains on: gray kept at its bit depth, RGB -> float32 Y in [0, 1]."""
    if img.ndim == 3:
        return luma(to_float01(img)).astype(np.float32)
    return img


def _load_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    ir, vi = as_luma(read_image(pair.ir)), as_luma(read_image(pair.vi))
    if ir.shape != vi.shape:
        raise DatasetError(f"{pair.name}: ir {ir.shape[1]}x{ir.shape[0]} vs vi {vi.shape[1]}x{vi.shape[0]}")
    return ir, vi


def load_pairs(pairs: Sequence[Pair], keep: bool = True, progress: bool = False,
               threads: int = 4) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Read every pair once (in threads); raises DatasetError listing unreadable and size-mismatched pairs.

    Returns the decoded images when ``keep``, else None (the files are then read again per sample).
    """
    problems: list[str] = []
    images: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(pairs)

    def work(i: int) -> None:
        try:
            loaded = _load_pair(pairs[i])
        except (ImageReadError, DatasetError) as exc:
            problems.append(str(exc))
            return
        if keep:
            images[i] = loaded

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(tqdm(pool.map(work, range(len(pairs))), total=len(pairs), desc="reading pairs", unit="pair",
                  disable=not progress, leave=False))
    if problems:
        raise DatasetError(_problem_report("unreadable or size-mismatched", sorted(problems),
                                           len(pairs) - len(problems)))
    return images if keep else None  # type: ignore[return-value]


def augment(img: np.ndarray, mode: int) -> np.ndarray:
    """One of the 8 symmetries of the square: ``mode % 4`` quarter turns, then a vertical flip if ``mode >= 4``."""
    out = np.rot90(img, mode % 4)
    return out[::-1] if mode >= 4 else out


def pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad bottom/right up to ``size`` (edge-pad a side of one pixel, which cannot reflect)."""
    ph, pw = max(size - img.shape[0], 0), max(size - img.shape[1], 0)
    if not ph and not pw:
        return img
    mode = "reflect" if min(img.shape[:2]) > 1 else "edge"
    return np.pad(img, ((0, ph), (0, pw)), mode=mode)


# ----------------------------------------------------------------------------- dataset and sampler


class FusionPairDataset(Dataset):
    """Random crops of registered pairs. Indexed by ``(position, pair index)`` keys from ``PairStreamSampler``.

    ``dataset[(p, i)]`` -> {"ir": (1, S, S), "vi": (1, S, S), "name": str}; the crop and the flip/rotation
    are drawn from a generator seeded with (seed, p), so the sample at stream position p never changes.
    """

    def __init__(self, pairs: Sequence[Pair], patch_size: int, seed: int = 0, cache: bool = True,
                 augment: bool = True, progress: bool = False) -> None:
        if not pairs:
            raise DatasetError("no training pair left (check dataroot, include and exclude)")
        self.pairs = list(pairs)
        self.patch_size = patch_size
        self.seed = seed
        self.augment = augment
        self.images = load_pairs(self.pairs, keep=cache, progress=progress)

    def __len__(self) -> int:
        return len(self.pairs)

    def _images(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self.images is not None:
            return self.images[index]
        return _load_pair(self.pairs[index])

    def __getitem__(self, key: tuple[int, int] | int) -> dict:
        position, index = key if isinstance(key, tuple) else (key, key)
        ir, vi = self._images(index)
        rng = np.random.default_rng([self.seed, position])
        s = self.patch_size
        ir, vi = pad_to(ir, s), pad_to(vi, s)
        top = int(rng.integers(ir.shape[0] - s + 1))
        left = int(rng.integers(ir.shape[1] - s + 1))
        ir, vi = ir[top:top + s, left:left + s], vi[top:top + s, left:left + s]
        if self.augment:
            mode = int(rng.integers(AUGMENT_MODES))
            ir, vi = augment(ir, mode), augment(vi, mode)
        return {
            "ir": torch.from_numpy(to_float01(np.ascontiguousarray(ir)))[None],
            "vi": torch.from_numpy(to_float01(np.ascontiguousarray(vi)))[None],
            "name": self.pairs[index].name,
        }


class PairStreamSampler(Sampler):
    """An endless stream of (position, pair index) keys, cut into per-process batches.

    The global stream visits the pairs in a fresh permutation every epoch (seeded by (seed, epoch)).
    Iteration ``i`` uses global positions ``[i * B, (i + 1) * B)`` of it, and process ``rank`` takes its
    ``B / world_size`` share, so the samples of iteration i do not depend on how the run was split into
    processes or interrupted: ``start_iter`` resumes the stream exactly.
    """

    def __init__(self, n_pairs: int, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, start_iter: int = 0) -> None:
        if global_batch % world_size:
            raise ValueError(f"batch_size {global_batch} does not split evenly over {world_size} processes")
        self.n, self.batch, self.rank, self.world = n_pairs, global_batch, rank, world_size
        self.local = global_batch // world_size
        self.seed, self.shuffle, self.start_iter = seed, shuffle, start_iter
        self._epoch, self._order = -1, np.arange(n_pairs)

    def _index(self, position: int) -> int:
        epoch = position // self.n
        if self.shuffle and epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._epoch = epoch
        return int(self._order[position % self.n])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        it = self.start_iter
        while True:
            first = it * self.batch + self.rank * self.local
            for position in range(first, first + self.local):
                yield position, self._index(position)
            it += 1
