"""ServiceGroup: which hosts and services are alive.

``API`` is the entry point (join, leave, service_is_up, get_all,
last_seen, groups); ``LivenessView`` is the in-memory view the matchmaker
consults per message.  Drivers live in ``servicegroup.drivers``.
"""

from nova_rpc_zmq.servicegroup.api import (
    API, MemberRecord, ServiceGroupUnavailable, member_key)
from nova_rpc_zmq.servicegroup.liveness import LivenessView

__all__ = ["API", "LivenessView", "MemberRecord", "ServiceGroupUnavailable",
           "member_key"]
