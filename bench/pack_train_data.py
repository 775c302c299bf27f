"""Pack the training split of ../shared/data as gray PNG pairs, small enough to carry to a GPU machine.

    python bench/pack_train_data.py --data ../shared/data --out .gpu/train_data

Writes <out>/<DATASET>/{ir,vi}/<stem>.png (visible converted to luma, as the trainer would),
never any pair of the evaluation split (diffmf_training.split).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from diffmf_training.split import DATASETS, split_pairs

from diffmf_core.colour import luma
from diffmf_core.images import read_image, to_float01, to_uint8, write_image


def gray8(img: np.ndarray) -> np.ndarray:
    f = to_float01(img)
    return to_uint8(luma(f) if f.ndim == 3 else f)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path(".gpu/train_data"))
    args = ap.parse_args()
    total = 0
    for ds in DATASETS:
        names = split_pairs(args.data, ds, evaluation=False)
        for name in names:
            stem = Path(name).stem
            for mod in ("ir", "vi"):
                write_image(args.out / ds / mod / f"{stem}.png", gray8(read_image(args.data / ds / mod / name)))
        total += len(names)
        print(f"{ds}: {len(names)} training pairs")
    print(f"{total} pairs written under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
