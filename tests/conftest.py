"""Tests import helpers that sit next to them (readme_examples)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
