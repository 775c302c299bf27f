"""The seed's test entry point, kept so its command works unchanged from inside training/:

    python test_DIFFMF.py --model_path=./ckpt --iter_number=10000 --dataset=VIF --A_dir=ir --B_dir=vi

It is ``diffmf_test`` (diffmf_training.test): fuses <root>/<dataset>/{ir,vi} (root: dataset/test).
"""

import os
import sys

if __name__ == "__main__":
    # Run as a script, this folder leads sys.path; drop it so that its test.py, train.py and options/
    # cannot shadow other top-level modules. The package itself is imported by its installed name.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    from diffmf_training.test import main

    sys.exit(main())
