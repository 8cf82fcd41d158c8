"""Deploy bundles to Linux devices: preflight, content-addressed transfer, atomic install, smoke + rollback,
device commands and fleets. Entry points: run.deploy_to, fleet.run_fleet, commands.*; the device side is
llmos_edge/device (stdlib only, packed into bin/llmos-agent). Contract: device/protocol.py and
docs/design.md "Device layout".
"""
