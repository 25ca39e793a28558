"""The IPC directory (``rpc_zmq_ipc_dir``) shared by the receiver and the
services of a host: the name of every file in it (topic sockets, direct
reply sockets, local-call directories, the lock) and the path limit, its
safety checks, the receiver's lock.

Anyone who can write in it can talk to the local services or replace their
sockets, so it is made 0750 and refused when others may write in it. Used by
the receiver and by services (local calls), so it lives below both.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from nova_rpc_zmq.errors import ConfigurationError

#: Longest path an ``ipc://`` endpoint may have (sun_path minus the NUL).
IPC_PATH_MAX = 107
#: The file in rpc_zmq_ipc_dir that the running receiver holds locked.
LOCK_NAME = "receiver.lock"
#: The receiver's socket of a topic is ``<dir>/zmq_topic_<topic>``.
TOPIC_PREFIX = "zmq_topic_"
#: A caller's direct reply socket is ``<dir>/zmq_direct_<token>``.
DIRECT_PREFIX = "zmq_direct_"
#: The local services of a topic bind ``<dir>/zmq_local.<topic>/<token>``.
LOCAL_PREFIX = "zmq_local."
#: Longest rpc_zmq_ipc_dir (in bytes) in which the shortest socket path the
#: receiver makes, ``<dir>/zmq_topic_`` and a one-character topic, fits.
MAX_DIR_LEN = IPC_PATH_MAX - len("/" + TOPIC_PREFIX + "x")


class IpcDirError(ConfigurationError):
    """The IPC directory cannot be used; the message says why and the fix."""


def ipc_path(ipc_dir: str, topic: str) -> str:
    """The file path behind ``ipc://<dir>/zmq_topic_<topic>``."""
    return os.path.join(ipc_dir, TOPIC_PREFIX + topic)


def direct_reply_path(ipc_dir: str, token: str) -> str:
    """The reply socket a caller process with ``token`` binds for servers
    on its host: ``<dir>/zmq_direct_<token>``."""
    return os.path.join(ipc_dir, DIRECT_PREFIX + token)


def local_dir(ipc_dir: str, topic: str) -> str:
    """The directory holding the local sockets of ``topic``'s services:
    ``<dir>/zmq_local.<topic>``."""
    return os.path.join(ipc_dir, LOCAL_PREFIX + topic)


def prepare_ipc_dir(ipc_dir: str, receiver: bool = True) -> None:
    """Create the IPC directory (0750) if missing and check it is usable
    and safe: ours, and writable by no one else (anyone who can write in it
    can talk to the local services or replace their sockets).

    ``receiver``: also check it is short enough for every socket path the
    receiver makes (a service checks each of its own paths instead).
    Raises IpcDirError naming the directory and the fix.
    """
    # checked first, so that a refused directory is not left behind
    longest = len(ipc_path(ipc_dir, "zmq_replies.")) + 20
    if receiver and longest > IPC_PATH_MAX:
        raise IpcDirError(
            "rpc_zmq_ipc_dir %s is too long (%d bytes) for ipc:// socket paths "
            "(at most %d bytes in all): choose a shorter directory such as "
            "/var/run/openstack" % (ipc_dir, len(ipc_dir), IPC_PATH_MAX))
    if not os.path.isdir(ipc_dir):
        try:
            os.makedirs(ipc_dir, mode=0o750, exist_ok=True)
            # makedirs' mode is masked by the umask (077 would lock the
            # services' group out): set it as documented
            os.chmod(ipc_dir, 0o750)
        except OSError as exc:
            raise IpcDirError(
                "cannot create rpc_zmq_ipc_dir %s (%s): create it with mode "
                "0750 for the user running the services, or point "
                "rpc_zmq_ipc_dir at a writable directory"
                % (ipc_dir, exc.strerror)) from exc
    if not os.access(ipc_dir, os.W_OK | os.X_OK):
        raise IpcDirError(
            "rpc_zmq_ipc_dir %s is not writable by uid %d: chown it to the "
            "user running the receiver and the services, mode 0750"
            % (ipc_dir, os.getuid()))
    st = os.stat(ipc_dir)
    uid = os.geteuid()
    if st.st_uid != uid:
        raise IpcDirError(
            "rpc_zmq_ipc_dir %s is owned by uid %d, not by uid %d running "
            "this process: chown %d %s (the user running the receiver and the "
            "services), or point rpc_zmq_ipc_dir at a directory of that user"
            % (ipc_dir, st.st_uid, uid, uid, ipc_dir))
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise IpcDirError(
            "rpc_zmq_ipc_dir %s is writable by %s (mode %04o), so others could "
            "talk to the local services: chmod 0750 %s"
            % (ipc_dir, "everyone" if st.st_mode & stat.S_IWOTH else "its group",
               stat.S_IMODE(st.st_mode), ipc_dir))


def lock_ipc_dir(ipc_dir: str) -> int:
    """Lock ``<ipc_dir>/receiver.lock`` for this process; returns its fd.

    The lock lasts until the fd is closed or the process ends (the kernel
    releases it after a kill -9, so a restart works). Raises IpcDirError
    naming the directory and the pid of the receiver that holds it.
    """
    path = os.path.join(ipc_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        raise IpcDirError(
            "cannot open %s (%s): make rpc_zmq_ipc_dir %s writable by the user "
            "running the receiver" % (path, exc.strerror, ipc_dir)) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        except OSError:
            holder = "?"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise IpcDirError("cannot lock %s: %s" % (path, exc.strerror)) from exc
        raise IpcDirError(
            "rpc_zmq_ipc_dir %s is in use by another nova-rpc-zmq-receiver "
            "(pid %s): one receiver per directory; stop that one first, or "
            "give this receiver its own rpc_zmq_ipc_dir (and rpc_zmq_port)"
            % (ipc_dir, holder)) from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    return fd
