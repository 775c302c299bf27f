"""The seed's training entry point, kept so its command works unchanged from inside training/:

    python -m torch.distributed.launch --nproc_per_node=2 --master_port=1234 train_DIFFMF.py \
        --opt options/DIFFMF/DIFFMF.json --dist True

It is ``diffmf_train`` (diffmf_training.train), which also accepts torchrun and plain single-process starts.
"""

import os
import sys

if __name__ == "__main__":
    # Run as a script, this folder leads sys.path; drop it so that its train.py, test.py and options/
    # cannot shadow other top-level modules. The package itself is imported by its installed name.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    from diffmf_training.train import main

    sys.exit(main())
