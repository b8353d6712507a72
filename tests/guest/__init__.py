"""The guest test tier (see vm.py and docs/testing.md)."""
