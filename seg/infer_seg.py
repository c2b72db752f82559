#!/usr/bin/env python
"""`python infer_seg.py ...` is `retab infer_seg ...`; the stage lives in retab/stages/infer_seg.py."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from retab.cli import run_stage  # noqa: E402

sys.exit(run_stage("infer_seg"))
