#!/usr/bin/env python
"""`python evaluation.py ...` is `retab evaluation ...`; the stage lives in retab/stages/evaluation.py."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from retab.cli import run_stage  # noqa: E402

sys.exit(run_stage("evaluation"))
