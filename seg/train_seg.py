#!/usr/bin/env python
"""`python train_seg.py ...` is `retab train_seg ...`; the stage lives in retab/stages/train_seg.py."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from retab.cli import run_stage  # noqa: E402

sys.exit(run_stage("train_seg"))
