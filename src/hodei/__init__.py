"""Hodei Jobs: a job-execution platform with on-demand workers, live logs and masked secrets."""

__version__ = "0.1.0"
