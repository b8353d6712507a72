from __future__ import annotations

import os
import sys

# Run from a checkout without installing: tests import capsa from src/.
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
