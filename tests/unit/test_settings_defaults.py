"""Every default defined once: ``config.default`` reads the option
definitions, ``config.default_settings`` builds Settings from them without
the process's configuration, and messages quote ``DOWN_TIME_FACTOR``."""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
import re
from typing import Any

import pytest

import nova_rpc_zmq
from nova_rpc_zmq import config, errors, ipcdir, wire
from tests.support import scaled

# derived from other fields or normalised by load_settings, so the
# validated value differs from the option's raw default on purpose
DERIVED = {"rpc_zmq_health_port", "rpc_backend", "rpc_zmq_host",
           "allowed_rpc_exception_modules", "rpc_zmq_reply_hosts"}


def test_default_settings_hold_each_options_own_default() -> None:
    settings = config.default_settings()
    for field in config.FIELDS:
        if field not in DERIVED:
            assert getattr(settings, field) == config.default(field), field
    assert settings.rpc_zmq_health_port == config.default("rpc_zmq_port") + 2
    assert settings.allowed_rpc_exception_modules == tuple(
        config.default("allowed_rpc_exception_modules"))
    assert settings.servicegroup_enabled is False


def test_default_settings_ignore_the_process_configuration() -> None:
    config.CONF.set_override("rpc_zmq_port", 9777)
    try:
        assert config.load_settings(config.CONF).rpc_zmq_port == 9777
        assert config.default_settings().rpc_zmq_port == config.default("rpc_zmq_port")
    finally:
        config.CONF.clear_override("rpc_zmq_port")


def test_fields_are_validated_like_file_values() -> None:
    settings = config.default_settings(rpc_zmq_port="9612", rpc_zmq_matchmaker="local")
    assert (settings.rpc_zmq_port, settings.rpc_zmq_matchmaker) == (9612, "localhost")
    with pytest.raises(errors.ConfigurationError, match="rpc_zmq_port"):
        config.default_settings(rpc_zmq_port=70000)
    with pytest.raises(TypeError, match="no_such_option"):
        config.default_settings(no_such_option=1)


def test_the_down_time_rule_is_quoted_from_one_place() -> None:
    with pytest.raises(errors.ConfigurationError) as caught:
        config.default_settings(service_down_time=5, report_interval=10)
    assert "at least %s x report_interval" % config.DOWN_TIME_FACTOR in str(caught.value)


def test_limits_are_the_wire_limits_of_the_settings() -> None:
    settings = config.default_settings(rpc_zmq_max_frames=9)
    assert isinstance(settings.limits, wire.Limits)
    assert settings.limits.max_frames == 9
    assert dataclasses.replace(settings, rpc_zmq_max_frames=3).limits.max_frames == 3


def test_default_of_an_unknown_field_raises() -> None:
    with pytest.raises(KeyError):
        config.default("no_such_option")


# -- no second copy of a default ----------------------------------------------

#: Keyword parameters that stand for a Settings field of another name.
PARAM_FIELDS = {"recv_timeout_ms": "zookeeper_recv_timeout",
                "sg_prefix": "zookeeper_sg_prefix",
                "retry_interval": "zookeeper_sg_retry_interval",
                "receiver_group": "rpc_zmq_receiver_group"}
SG = "nova_rpc_zmq.servicegroup"
#: Every constructor that defaults an option, and the fields it defaults.
OPTION_PARAMETERS = [
    (SG + ".drivers.base", "Driver", {"service_down_time", "report_interval"}),
    (SG + ".drivers.mc", "McDriver", {"memcached_servers", "service_down_time",
                                      "report_interval"}),
    (SG + ".drivers.db", "DbDriver", {"database_connection", "service_down_time",
                                      "report_interval"}),
    (SG + ".drivers.zk", "ZkDriver", {"service_down_time", "report_interval",
                                      "zookeeper_recv_timeout", "zookeeper_sg_prefix",
                                      "zookeeper_sg_retry_interval"}),
    (SG + ".liveness", "LivenessView", {"rpc_zmq_receiver_group"}),
]


@pytest.mark.parametrize("module, name, fields", OPTION_PARAMETERS,
                         ids=[name for _, name, _ in OPTION_PARAMETERS])
def test_constructor_defaults_are_the_option_defaults(module: str, name: str,
                                                      fields: set) -> None:
    cls = getattr(pytest.importorskip(module), name)
    defaults = {}
    for param in inspect.signature(cls.__init__).parameters.values():
        field = PARAM_FIELDS.get(param.name, param.name)
        if field in config.FIELDS and param.default is not param.empty:
            defaults[field] = param.default
    assert set(defaults) == fields
    for field, value in defaults.items():
        assert value == config.default(field), (name, field)


def test_the_db_driver_default_url_is_the_options_and_its_docstring_says_so() -> None:
    db = pytest.importorskip(SG + ".drivers.db")
    assert db.DEFAULT_URL == config.default("database_connection")
    doc = db.__doc__ or ""
    assert re.findall(r"sqlite:/+[^`\s)]+", doc) == [db.DEFAULT_URL]


def test_the_zk_docstring_quotes_the_option_defaults() -> None:
    zk = pytest.importorskip(SG + ".drivers.zk")
    doc = " ".join((zk.__doc__ or "").split())
    assert "milliseconds (%s)" % config.default("zookeeper_recv_timeout") in doc
    assert "(``%s``)" % config.default("zookeeper_sg_prefix") in doc
    assert "attempts (%s)" % config.default("zookeeper_sg_retry_interval") in doc


def test_from_settings_carries_the_fields_into_the_drivers(tmp_path: Any) -> None:
    from nova_rpc_zmq.servicegroup.drivers import load_driver
    settings = config.default_settings(service_down_time=33, report_interval=3,
                                       memcached_servers=None)
    mc = load_driver("mc", settings)
    try:
        assert (mc.service_down_time, mc.report_interval, mc.servers) == (33, 3, [])
    finally:
        mc.stop()
    pytest.importorskip("sqlalchemy")
    url = "sqlite:///%s" % (tmp_path / "sg.sqlite")
    db = load_driver("db", config.default_settings(
        service_down_time=44, report_interval=4, database_connection=url))
    try:
        assert (db.service_down_time, db.report_interval, db.url) == (44, 4, url)
    finally:
        db.stop()


def test_settings_fields_are_read_not_given_a_second_default() -> None:
    """Settings has every field: code holding one reads the field instead
    of ``getattr(settings, name, fallback)``, a second copy of its default."""
    pattern = re.compile(r"getattr\(\s*(?:self\.)?settings,\s*\"(\w+)\",")
    root = pathlib.Path(nova_rpc_zmq.__file__).parent
    found = {path.relative_to(root).as_posix(): pattern.findall(path.read_text())
             for path in root.rglob("*.py")}
    assert {path: fields for path, fields in found.items() if fields} == {}


# -- one definition of the IPC file names and the path limit ------------------

def test_the_ipc_dir_limit_is_ipcdirs() -> None:
    longest = "/" + "d" * (ipcdir.MAX_DIR_LEN - 1)
    assert len(ipcdir.ipc_path(longest, "x")) == ipcdir.IPC_PATH_MAX
    assert config.default_settings(rpc_zmq_ipc_dir=longest).rpc_zmq_ipc_dir == longest
    with pytest.raises(errors.ConfigurationError,
                       match="at most %d bytes" % ipcdir.MAX_DIR_LEN):
        config.default_settings(rpc_zmq_ipc_dir=longest + "d")


def test_every_ipc_file_name_comes_from_ipcdir() -> None:
    from nova_rpc_zmq.impl_zmq import local, replies
    assert ipcdir.ipc_path("/r", "t") == "/r/zmq_topic_t"
    assert ipcdir.direct_reply_path("/r", "k") == "/r/zmq_direct_k"
    assert ipcdir.local_dir("/r", "t") == "/r/zmq_local.t"
    assert local.local_dir is ipcdir.local_dir
    assert replies.direct_reply_path is ipcdir.direct_reply_path
    root = pathlib.Path(nova_rpc_zmq.__file__).parent
    for path in root.rglob("*.py"):
        if path.name != "ipcdir.py":
            text = path.read_text()
            for name in ("\"zmq_topic_", "\"zmq_direct_", "\"zmq_local."):
                assert name not in text, (path, name)


# -- the fake backend without a configuration ---------------------------------

class _Failing:
    def fail_builtin(self, ctxt: Any) -> None:
        raise KeyError("no such key")


def test_impl_fake_without_a_conf_has_the_option_defaults() -> None:
    """conf None: the options' defaults apply, so a KeyError is rebuilt
    (``builtins`` is in allowed_rpc_exception_modules' default)."""
    from nova_rpc_zmq.rpc import impl_fake
    from nova_rpc_zmq.rpc.dispatcher import RpcDispatcher
    try:
        conn = impl_fake.create_connection(None)
        conn.create_consumer("defaults", RpcDispatcher([_Failing()]))
        conn.consume_in_thread()
        with pytest.raises(KeyError, match="no such key"):
            impl_fake.call(None, {}, "defaults", {"method": "fail_builtin", "args": {}},
                           timeout=scaled(10))
    finally:
        impl_fake.cleanup()
    assert impl_fake._timeout(None, None) == config.default("rpc_response_timeout")
    assert impl_fake._allowed_modules(None) == config.default(
        "allowed_rpc_exception_modules")
