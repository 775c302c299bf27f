"""The evaluation split of ../shared/data that the shipped weights never train on.

Evaluation = every TNO pair with an even number + the MSRS pairs whose number ends in 0-4.
Training   = all of RoadScene + the other TNO and MSRS pairs.
"""

from __future__ import annotations

import re
from pathlib import Path

DATASETS = ("TNO", "RoadScene", "MSRS")


def is_eval_pair(dataset: str, stem: str) -> bool:
    """True for pairs held out for evaluation."""
    digits = re.match(r"\d+", stem)
    if dataset == "TNO" and digits:
        return int(digits.group()) % 2 == 0
    if dataset == "MSRS" and digits:
        return digits.group()[-1] in "01234"
    return False


def split_pairs(data_root: Path, dataset: str, evaluation: bool) -> list[str]:
    """Sorted file names of ``dataset``'s pairs in the evaluation (True) or training (False) part."""
    names = sorted(p.name for p in (Path(data_root) / dataset / "ir").iterdir() if p.is_file())
    return [n for n in names if is_eval_pair(dataset, Path(n).stem) == evaluation]
