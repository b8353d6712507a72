"""The Result of a run of capsa's Python API: what happened, in one frozen record."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """How a run ended. exit_code is the shell's number (128 + signal when killed by one)."""

    stdout: bytes
    stderr: bytes
    exit_code: int
    signal: int | None
    timed_out: bool
    oom_killed: bool
    output_truncated: bool
    wall_time: float  # seconds, from start to exit
    cpu_time: float  # seconds of CPU used by every process of the run (cgroup accounting)
    peak_memory: int  # bytes, the run's cgroup high-water mark (0 if unknown)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.oom_killed or self.output_truncated)
