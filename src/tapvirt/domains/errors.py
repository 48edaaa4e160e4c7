"""Error codes of the lifecycle layer (start, stop, state, supervisor, QMP)."""

from __future__ import annotations

from tapvirt.errors import define

_L = "lifecycle"

DOMAIN_NOT_FOUND = define("domain-not-found", "no domain of that name is defined", layer=_L)

# The definitions store (tapvirt.domains.store).
DOMAIN_NAME_TAKEN = define(
    "domain-name-taken",
    "a domain of that name is already defined with another uuid",
    layer=_L,
)
DOMAIN_UUID_TAKEN = define(
    "domain-uuid-taken", "another domain is already defined with that uuid", layer=_L
)
STORE_UNUSABLE = define(
    "store-unusable",
    "the definitions directory cannot be created, secured or written",
    layer=_L,
)
STORE_CORRUPT = define(
    "store-corrupt", "a stored definition cannot be read back (edited or damaged)", layer=_L
)
DOMAIN_RUNNING = define(
    "domain-running", "the domain is already running (or being started)", layer=_L
)
DOMAIN_NOT_RUNNING = define("domain-not-running", "the domain is not running", layer=_L)
DOMAIN_BUSY = define(
    "domain-busy",
    "another tapvirt command holds the domain's lock (a start or stop in progress)",
    layer=_L,
)
RUNTIME_DIR_UNSAFE = define(
    "runtime-dir-unsafe",
    "the runtime directory is not a private directory owned by the caller",
    layer=_L,
)
EMULATOR_MISSING = define(
    "emulator-missing", "the QEMU binary (<emulator>) cannot be found or run", layer=_L
)
QEMU_FAILED = define(
    "qemu-failed", "QEMU exited while the guest was being started (its stderr says why)",
    layer=_L,
)
START_TIMEOUT = define(
    "start-timeout", "QEMU did not answer on its QMP socket in time", layer=_L
)
QMP_UNAVAILABLE = define(
    "qmp-unavailable", "QEMU's QMP socket cannot be reached or closed unexpectedly", layer=_L
)
QMP_COMMAND_FAILED = define(
    "qmp-command-failed", "QEMU refused a QMP command (its error class and text are shown)",
    layer=_L,
)
QMP_TIMEOUT = define("qmp-timeout", "QEMU did not answer a QMP command in time", layer=_L)
SUPERVISOR_FAILED = define(
    "supervisor-failed", "the guest's supervisor process could not be started or died",
    layer=_L,
)
SUPERVISOR_SETTING_INVALID = define(
    "supervisor-setting-invalid",
    "TAPVIRT_SUPERVISOR is neither `always` nor `auto`",
    layer=_L,
)
STOP_TIMEOUT = define(
    "stop-timeout", "the guest did not stop in time (QEMU ignores SIGKILL: stuck in the kernel)",
    layer=_L,
)

# Integrity of the runtime state (tapvirt.domains.runtime).
STATE_UNREADABLE = define(
    "state-unreadable",
    "a guest's state file is damaged, truncated or not tapvirt's (not trusted as 'shut off')",
    layer=_L,
)
RUNTIME_DIR_FULL = define(
    "runtime-dir-full",
    "the runtime directory's file system is full (or over quota): no state can be written",
    layer=_L,
)
RUNTIME_DIR_UNWRITABLE = define(
    "runtime-dir-unwritable",
    "a file in the runtime directory cannot be written (permissions, read-only, I/O error)",
    layer=_L,
)
RUNTIME_PATH_TOO_LONG = define(
    "runtime-path-too-long",
    "the runtime directory's path is too long for a unix socket (QMP) path",
    layer=_L,
)
DESTROYED_WHILE_STARTING = define(
    "destroyed-while-starting",
    "`tapvirt destroy` stopped the guest before its start finished",
    layer=_L,
)

# The interactive console (tapvirt.domains.console).
CONSOLE_BUSY = define(
    "console-busy", "another `tapvirt console` is attached to the guest's serial port",
    layer=_L,
)
CONSOLE_NOT_INTERACTIVE = define(
    "console-not-interactive",
    "the guest's serial port 0 is not a pty or a listening unix socket (file, null, connect)",
    layer=_L,
)
CONSOLE_UNAVAILABLE = define(
    "console-unavailable", "the guest's serial pty or socket cannot be opened", layer=_L
)
