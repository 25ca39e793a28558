"""What a Nova-era ``rpc/__init__.py`` does: register the generic rpc
options on ``oslo_config.cfg.CONF`` with its own help and defaults, import
``CONF.rpc_backend`` on first use and call each backend function with
``CONF`` first."""

import importlib

from oslo_config import cfg

CONF = cfg.CONF

# the host program's own definitions: other types, defaults and help texts
# than the backend's, as they were in Nova
CONF.register_opts([
    cfg.StrOpt("rpc_backend", default="nova.openstack.common.rpc.impl_kombu",
               help="The messaging module to use."),
    cfg.IntOpt("rpc_thread_pool_size", default=64, help="Size of RPC thread pool."),
    cfg.IntOpt("rpc_conn_pool_size", default=30, help="Size of RPC connection pool."),
    cfg.IntOpt("rpc_response_timeout", default=60,
               help="Seconds to wait for a response from call or multicall."),
    cfg.IntOpt("rpc_cast_timeout", default=30,
               help="Seconds to wait before a cast expires."),
    cfg.ListOpt("allowed_rpc_exception_modules",
                default=["nova.exception", "cinder.exception"],
                help="Modules of exceptions that may be recreated from rpc errors."),
    cfg.StrOpt("control_exchange", default="openstack",
               help="Exchange to connect to."),
])
# what nova/service.py and nova/servicegroup/api.py registered
CONF.register_opts([
    cfg.IntOpt("report_interval", default=10, help="Seconds between nodes reporting state."),
    cfg.IntOpt("service_down_time", default=60, help="Maximum time since last check-in."),
    cfg.StrOpt("servicegroup_driver", default="db", help="The driver for servicegroup."),
])

_impl = None


def _get_impl():
    global _impl
    if _impl is None:
        _impl = importlib.import_module(CONF.rpc_backend)
    return _impl


def create_connection(new=True):
    return _get_impl().create_connection(CONF, new=new)


def call(context, topic, msg, timeout=None):
    return _get_impl().call(CONF, context, topic, msg, timeout)


def multicall(context, topic, msg, timeout=None):
    return _get_impl().multicall(CONF, context, topic, msg, timeout)


def cast(context, topic, msg):
    return _get_impl().cast(CONF, context, topic, msg)


def fanout_cast(context, topic, msg):
    return _get_impl().fanout_cast(CONF, context, topic, msg)


def cast_to_server(context, server_params, topic, msg):
    return _get_impl().cast_to_server(CONF, context, server_params, topic, msg)


def fanout_cast_to_server(context, server_params, topic, msg):
    return _get_impl().fanout_cast_to_server(CONF, context, server_params, topic, msg)


def notify(context, topic, msg, envelope=False):
    return _get_impl().notify(CONF, context, topic, msg, envelope)


def cleanup():
    return _get_impl().cleanup()


def queue_get_for(context, topic, host):
    return "%s.%s" % (topic, host)
