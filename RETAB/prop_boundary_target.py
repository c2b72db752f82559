#!/usr/bin/env python
"""`python prop_boundary_target.py ...` is `retab prop_boundary_target ...`; the stage lives in retab/stages/prop_boundary_target.py."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from retab.cli import run_stage  # noqa: E402

sys.exit(run_stage("prop_boundary_target"))
