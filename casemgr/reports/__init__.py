"""Aggregate reports: counts only, with small cells suppressed (SPEC §3, §6)."""
