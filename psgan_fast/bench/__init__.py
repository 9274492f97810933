"""Timing harness and report for the paper's time-cost tables (Tables 3, 4)."""
