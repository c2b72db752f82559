#!/usr/bin/env python
"""`python convert_cams.py ...` is `retab convert_cams ...`; the stage lives in retab/stages/convert_cams.py."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from retab.cli import run_stage  # noqa: E402

sys.exit(run_stage("convert_cams"))
