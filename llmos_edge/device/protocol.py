"""The agent protocol, written once: the host side, the agent and the OTA updater all import it.

Stdlib-only and import-free, like every module of this package (it runs on the device).
The agent is called as `llmos-agent COMMAND --root ROOT [options]`, reads an optional JSON object
on stdin and prints one JSON object on stdout: {"ok": true, ...} or {"ok": false, "error": ...,
"hints": [...], ...}, with one of the exit codes below.
"""

from __future__ import annotations

# Exit codes (the JSON answer says the same thing in words).
RC_OK = 0
RC_FAILED = 1  # any other failure (a bug, an unexpected OSError)
RC_SMOKE = 4  # the new release failed its smoke test and was rolled back
RC_LOCKED = 10  # the device lock (or its work lock) is held by someone else
RC_VERIFY = 12  # a file did not match its sha256 (missing, partial or corrupt)
RC_REFUSED = 13  # bad input: a path outside its place, an unknown version, no lock token
RC_RESOURCE = 14  # out of a device resource (disk, memory); the version is not marked failed

# Commands, in the order a deploy uses them, then the inspection and maintenance ones.
PROBE, HOLD, HAVE, RECEIVE, COMMIT, INSTALL, PREPARE, CLEAN_STAGING, ACTIVATE = (
    "probe", "hold", "have", "receive", "commit", "install", "prepare", "clean-staging", "activate",
)
BOOT, ROLLBACK, STATUS, RELEASES, LOGS = "boot", "rollback", "status", "releases", "logs"
COMMANDS = (
    PROBE, HOLD, HAVE, RECEIVE, COMMIT, INSTALL, PREPARE, CLEAN_STAGING, ACTIVATE,
    BOOT, ROLLBACK, STATUS, RELEASES, LOGS,
)
LOCKED_COMMANDS = (RECEIVE, COMMIT, INSTALL, PREPARE, CLEAN_STAGING, ACTIVATE, ROLLBACK)  # need --token

# The phases of an activation, in order, as state/pending.json records them.
PHASES = ("record", "switch", "stop-old", "start-new", "smoke", "commit")

# Keys of `probe`'s answer that the host decides on (preflight, deploy planning, status views).
PROBE_KEYS = (
    "arch", "os", "libc", "libc_version", "python", "python_full", "hostname", "root", "root_exists",
    "disk_free", "mem_available", "current", "serving", "pending", "previous", "failed", "lock", "busy",
    "device", "systemd", "uid", "resolved",
)
# Keys of a refusal the host reads: the lock holder, and the resource a failure ran out of.
LOCK_KEYS = ("holder", "holder_pid", "held_for")
RESOURCE_KEYS = ("resource", "disk_free")

# Names shared with the bundle and the OTA wrappers.
AGENT_FILE = "bin/llmos-agent"  # in every bundle, and ROOT/bin/llmos-agent on the device
UPDATER_FILE = "bin/llmos-mender-module"  # the Mender module / RAUC hook, in every bundle
RAUC_META = "llmos-ota.json"  # beside the image in a RAUC bundle: {"manifest_sha256": ...}
FAULT_ENV = "LLMOS_AGENT_FAULT_FILE"  # tests only: kill points (see base.fault_point)
