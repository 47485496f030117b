"""Fault suite: each test reproduces an operator-found stall or leak (issue 7)."""
