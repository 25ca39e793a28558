"""Run a child process without root's power over file permissions.

CI runs the tests as root, and root writes into a mode 0500 directory
(CAP_DAC_OVERRIDE), so a test of "the receiver cannot write its IPC
directory" needs a child that obeys file modes.  Switching to a real
unprivileged user (``nobody``) is not enough on every machine: the
interpreter may live where only root can reach it (``/root/.pyenv``).  So
the child stays uid 0 and drops the capabilities that bypass file
permissions; as the owner of a mode 0500 directory it then cannot write in
it, exactly like an ordinary user in their own read-only directory.
"""

from __future__ import annotations

import ctypes
import os

#: Capabilities that let root ignore file modes and ownership
#: (linux/capability.h): CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER.
FILE_OVERRIDE_CAPS = (1, 2, 3)
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_VERSION_3 = 0x20080522

# loaded here, in the parent: a preexec_fn should do as little as possible
# between fork and exec
_LIBC = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def drop_file_override_caps() -> None:
    """``preexec_fn`` for subprocess: the child and whatever it executes
    lose the capabilities that bypass file permissions.

    Drops them from the bounding set (so exec cannot give them back to a
    uid-0 process) and from the effective, permitted, inheritable and
    ambient sets.  Raises OSError (failing the Popen) when the kernel
    refuses, so a test never believes it dropped what it still holds.
    """
    for cap in FILE_OVERRIDE_CAPS:
        _check(_LIBC.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0), "PR_CAPBSET_DROP")
    # kernels before 4.3 have no ambient set: nothing to clear there
    _LIBC.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_LIBC.capget(ctypes.byref(header), data), "capget")
    mask = 0
    for cap in FILE_OVERRIDE_CAPS:
        mask |= 1 << cap   # all below 32: they live in data[0]
    data[0].effective &= ~mask
    data[0].permitted &= ~mask
    data[0].inheritable &= ~mask
    _check(_LIBC.capset(ctypes.byref(header), data), "capset")
