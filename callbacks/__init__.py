"""Diagnostics callbacks for pcn-lightning: one callback a file."""
