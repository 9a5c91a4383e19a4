"""Reliability suite: faults, crashes, concurrency, hostile input and secrets."""
