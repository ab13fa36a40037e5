#!/usr/bin/env python
"""Train a predictive coding network: python train.py --config configs/cifar100.yaml"""

import sys

from pcn_lightning.cli import main

if __name__ == "__main__":
    sys.exit(main())
