"""capsa: a Linux container runtime (an OCI runtime, runc-compatible).

The package is a library first; ``capsa.cli`` is a thin layer over :mod:`capsa.container`.
Nothing heavy is imported here: every runtime call pays for what this file imports.
"""

__version__ = "0.1.0"
# The OCI runtime-spec release capsa implements; any 1.x config.json is accepted.
OCI_VERSION = "1.3.0"
