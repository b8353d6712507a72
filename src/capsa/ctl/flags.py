"""Flag values shared by capsactl's commands."""

from __future__ import annotations

import argparse


def boolean(text: str) -> bool:
    """A boolean flag value as podman's (Go's strconv.ParseBool) takes it: --tls-verify=false."""
    lowered = text.lower()
    if lowered in ("true", "1", "t", "yes"):
        return True
    if lowered in ("false", "0", "f", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}: give true or false")
