"""Deploy bundles to Linux devices: preflight, content-addressed transfer, atomic install, smoke + rollback,
device commands and fleets. Entry points: run.deploy_to, fleet.run_fleet, commands.*; the device side is
agent.py (stdlib only, shipped in bundles as bin/llmos-agent). Contract: docs/design.md "Device layout".
"""
