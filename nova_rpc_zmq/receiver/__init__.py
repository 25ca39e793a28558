"""The receiver daemon: TCP in, topic check, IPC out."""

from nova_rpc_zmq.receiver.daemon import Receiver, ReceiverError, ipc_path, prepare_ipc_dir

__all__ = ["Receiver", "ReceiverError", "ipc_path", "prepare_ipc_dir"]
