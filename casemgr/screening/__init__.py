"""Psychological screening: rounds, consent, instruments, results, review."""
