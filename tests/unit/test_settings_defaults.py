"""Every default defined once: ``config.default`` reads the option
definitions, ``config.default_settings`` builds Settings from them without
the process's configuration, and messages quote ``DOWN_TIME_FACTOR``."""

from __future__ import annotations

import dataclasses

import pytest

from nova_rpc_zmq import config, errors, wire

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
