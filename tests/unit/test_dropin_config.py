"""Settings from a host program's own ConfigOpts, as Nova-era code hands
them to the drop-in module: the host's definitions win, options it did not
register are read from the same files, and the result is derived once."""

from __future__ import annotations

import threading

from oslo_config import cfg

from nova_rpc_zmq import config


def host_conf(tmp_path, text: str) -> cfg.ConfigOpts:
    """A ConfigOpts like a Nova service's: its own generic options first."""
    path = tmp_path / "nova.conf"
    path.write_text(text)
    conf = cfg.ConfigOpts()
    conf.register_opts([
        cfg.IntOpt("rpc_response_timeout", default=33, help="the host's own"),
        cfg.StrOpt("rpc_backend", default="nova.openstack.common.rpc.impl_kombu"),
    ])
    conf(["--config-file", str(path)], project="nova")
    return conf


def test_process_configuration_is_oslo_configs_own():
    assert config.CONF is cfg.CONF


def test_host_definitions_win_and_the_rest_comes_from_the_same_file(tmp_path):
    conf = host_conf(tmp_path, "[DEFAULT]\nservice_down_time = 77\nrpc_zmq_port = 9612\n"
                               "[zookeeper]\nsg_prefix = /sg2\n")
    settings = config.settings_for(conf, rpc_backend="impl_zmq")
    assert settings.rpc_response_timeout == 33          # the host's default
    assert settings.service_down_time == 77             # not registered by the host
    assert settings.zookeeper_sg_prefix == "/sg2"
    assert settings.rpc_zmq_port == 9612
    # the host's namespace got only our own options, nothing generic
    assert "rpc_zmq_port" in conf
    assert "service_down_time" not in conf
    assert "zookeeper" not in conf


def test_settings_are_derived_once_and_again_after_a_change(tmp_path, monkeypatch):
    conf = host_conf(tmp_path, "[DEFAULT]\nrpc_zmq_port = 9613\n")
    calls = []
    real = config.load_settings

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(config, "load_settings", counting)
    first = config.settings_for(conf, rpc_backend="impl_zmq")
    seen = []
    threads = [threading.Thread(target=lambda: seen.extend(
        config.settings_for(conf, rpc_backend="impl_zmq") for _ in range(500)))
        for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(seen) == 4000 and all(s is first for s in seen)
    assert len(calls) == 1
    conf.set_override("rpc_zmq_port", 9614)
    changed = config.settings_for(conf, rpc_backend="impl_zmq")
    assert changed.rpc_zmq_port == 9614 and changed is not first
    conf.clear_override("rpc_zmq_port")
    assert config.settings_for(conf, rpc_backend="impl_zmq").rpc_zmq_port == 9613


def test_servicegroup_api_without_arguments_reads_the_process_config(tmp_path):
    from nova_rpc_zmq import servicegroup
    path = tmp_path / "nova.conf"
    path.write_text("[DEFAULT]\nservicegroup_driver = mc\nservice_down_time = 42\n"
                    "report_interval = 4\n")
    try:
        config.reset()
        cfg.CONF(["--config-file", str(path)], project="nova")
        api = servicegroup.API()
        try:
            assert type(api.driver).__name__ == "McDriver"
            assert api.service_down_time == 42
            assert api.report_interval == 4
        finally:
            api.stop()
    finally:
        config.reset()
