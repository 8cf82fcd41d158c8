"""The device side: the agent, the OTA updater and the protocol the host shares with them.

Every module here is stdlib-only python3 and imports its siblings relatively, so `pack` can ship
the package as one generated script (bin/llmos-agent, bin/llmos-mender-module, the SSH bootstrap).
The host imports `protocol` directly; tests/deploy/test_agent_stdlib.py guards both properties.
"""
