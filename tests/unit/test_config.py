"""config.py: options, nova.conf and flagfile reading, Settings validation."""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
from pathlib import Path

import pytest
from oslo_config import cfg

from nova_rpc_zmq import config, options
from nova_rpc_zmq.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
RINGFILES = ROOT / "ringfiles"


@pytest.fixture(autouse=True)
def clean_conf():
    """Every test starts and ends with a pristine global CONF."""
    config.reset()
    yield
    config.reset()


def read(*paths: Path | str):
    """Parse config files into the global CONF, no default files."""
    argv: list[str] = []
    for path in paths:
        argv += ["--config-file", str(path)]
    config.parse(config.CONF, argv, project="nova", default_config_files=[])
    return config.load_settings()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- options and defaults ----------------------------------------------------

def test_defaults():
    s = config.load_settings()
    assert s.rpc_backend == "impl_zmq"
    assert s.rpc_zmq_bind_address == "*"
    assert s.rpc_zmq_matchmaker == "localhost"
    assert (s.rpc_zmq_port, s.rpc_zmq_start_port) == (9501, 9500)
    assert s.rpc_zmq_contexts == 1
    assert s.rpc_zmq_io_batch is True
    assert (s.rpc_zmq_topic_backlog, s.rpc_zmq_topic_backlog_bytes) == \
        (10000, 64 * 1024 * 1024)
    assert s.rpc_zmq_ipc_dir == "/var/run/openstack"
    assert s.rpc_zmq_host == socket.gethostname()
    assert s.rpc_thread_pool_size == 1024
    assert (s.rpc_response_timeout, s.rpc_cast_timeout) == (60, 30)
    assert s.allowed_rpc_exception_modules == (
        "nova.exception", "cinder.exception",
        "nova.openstack.common.exception", "builtins", "exceptions")
    assert s.rpc_zmq_max_msg_size == 16 * 1024 * 1024
    assert (s.rpc_zmq_max_frames, s.rpc_zmq_max_topic_length,
            s.rpc_zmq_max_json_depth) == (64, 255, 64)
    assert s.rpc_zmq_health_port == 9503
    assert s.rpc_zmq_health_bind_address is None   # rpc_zmq_bind_address
    assert s.rpc_zmq_health_stuck_after == 1
    assert s.rpc_zmq_drain_file is None
    assert s.rpc_zmq_drain_timeout == 5
    assert s.control_exchange == "nova"
    assert s.servicegroup_driver == "db"
    assert (s.service_down_time, s.report_interval) == (60, 10)
    assert s.memcached_servers is None
    assert s.rpc_zmq_receiver_group == "rpc_zmq_receiver"
    assert s.rpc_zmq_curve is False
    assert s.rpc_zmq_curve_key_file == "/etc/nova/zmq/host.key"
    assert s.rpc_zmq_curve_keys_dir == "/etc/nova/zmq/keys"
    assert s.matchmaker_ringfile == "/etc/oslo/matchmaker_ring.json"
    assert s.zookeeper_address is None
    assert s.zookeeper_recv_timeout == 4000
    assert s.zookeeper_sg_prefix == "/servicegroups"
    assert s.zookeeper_sg_retry_interval == 5
    assert s.database_connection == \
        "sqlite:////var/lib/nova/nova_rpc_zmq_servicegroup.sqlite"


def test_settings_fields_match_options_and_are_frozen():
    s = config.load_settings()
    # one field per option, plus the derived servicegroup_enabled
    assert {f.name for f in dataclasses.fields(s)} == set(config.FIELDS) | {
        "servicegroup_enabled"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.rpc_zmq_port = 1  # type: ignore[misc]
    assert hash(s) == hash(config.load_settings())


def test_servicegroup_enabled_only_when_the_driver_is_set(tmp_path):
    assert config.load_settings().servicegroup_enabled is False
    assert config.load_settings(servicegroup_driver="mc").servicegroup_enabled is True
    conf = tmp_path / "nova.conf"
    conf.write_text("[DEFAULT]\nservicegroup_driver = db\n")
    config.reset()
    try:
        assert config.parse_args(["--config-file", str(conf)]).servicegroup_enabled is True
    finally:
        config.reset()


def test_every_option_has_operator_help():
    opts = list(config.DEFAULT_OPTS)
    for group_opts in config.GROUP_OPTS.values():
        opts += group_opts
    for opt in opts:
        assert opt.help and len(opt.help) >= 30, opt.dest


def test_limits_from_options():
    s = config.load_settings(config.CONF, rpc_zmq_max_msg_size=1000,
                             rpc_zmq_max_frames=8, rpc_zmq_max_topic_length=99,
                             rpc_zmq_max_json_depth=7)
    limits = s.limits
    assert (limits.max_msg_size, limits.max_frames, limits.max_topic_length,
            limits.max_json_depth) == (1000, 8, 99, 7)


def test_overrides_are_coerced_and_validated(tmp_path):
    s = config.load_settings(config.CONF, rpc_zmq_ipc_dir=str(tmp_path),
                             rpc_zmq_port="9601", rpc_zmq_curve="true",
                             memcached_servers="a:1, b:2")
    assert (s.rpc_zmq_ipc_dir, s.rpc_zmq_port, s.rpc_zmq_curve) == \
        (str(tmp_path), 9601, True)
    assert s.memcached_servers == ("a:1", "b:2")
    with pytest.raises(ConfigurationError, match="rpc_zmq_port = 'x'"):
        config.load_settings(config.CONF, rpc_zmq_port="x")
    with pytest.raises(TypeError, match="rpc_zmq_prot"):
        config.load_settings(config.CONF, rpc_zmq_prot=1)


def test_overrides_on_top_of_existing_settings():
    base = config.load_settings(config.CONF, rpc_zmq_matchmaker="nova.rpc.matchmaker.MatchMakerStub")
    s = config.load_settings(base, rpc_zmq_port=9602)
    assert (s.rpc_zmq_matchmaker, s.rpc_zmq_port) == ("stub", 9602)
    assert dataclasses.replace(s, rpc_zmq_port=base.rpc_zmq_port) == base
    assert config.load_settings(None) == config.load_settings()
    with pytest.raises(ConfigurationError):
        config.load_settings(base, rpc_zmq_port=0)


def test_reset_forgets_overrides_and_files(tmp_path):
    config.CONF.set_override("rpc_zmq_port", 9999)
    assert config.load_settings().rpc_zmq_port == 9999
    read(write(tmp_path, "n.conf", "[DEFAULT]\nrpc_zmq_start_port = 7000\n"))
    config.reset()
    s = config.load_settings()
    assert (s.rpc_zmq_port, s.rpc_zmq_start_port) == (9501, 9500)


def test_independent_conf_objects_do_not_share_state(tmp_path):
    other = config.NovaConfigOpts()
    config.register_opts(other)
    other(["--config-file",
           str(write(tmp_path, "a.conf", "[DEFAULT]\nrpc_zmq_port = 9700\n"))],
          default_config_files=[])
    assert config.load_settings(other).rpc_zmq_port == 9700
    assert config.load_settings().rpc_zmq_port == 9501


# -- INI files ---------------------------------------------------------------

def test_ini_nova_conf(tmp_path):
    path = write(tmp_path, "nova.conf", """
[DEFAULT]
rpc_backend = nova.rpc.impl_zmq
rpc_zmq_port = 9601
rpc_zmq_topic_backlog = 100
rpc_zmq_curve = True
memcached_servers = 10.0.0.1:11211,10.0.0.2:11211
allowed_rpc_exception_modules = nova.exception, myapp.errors
some_other_nova_option = whatever
[zookeeper]
address = 127.0.0.1:2181, 127.0.0.2:2181
recv_timeout = 2500
[database]
connection = postgresql://u:p@db/nova
[unrelated_group]
x = 1
""")
    s = read(path)
    assert (s.rpc_backend, s.rpc_zmq_port, s.rpc_zmq_topic_backlog) == \
        ("impl_zmq", 9601, 100)
    assert s.rpc_zmq_curve is True
    assert s.memcached_servers == ("10.0.0.1:11211", "10.0.0.2:11211")
    assert s.allowed_rpc_exception_modules == ("nova.exception", "myapp.errors")
    assert s.zookeeper_address == "127.0.0.1:2181,127.0.0.2:2181"
    assert s.zookeeper_recv_timeout == 2500
    assert s.database_connection == "postgresql://u:p@db/nova"


@pytest.mark.parametrize("text", [
    "[matchmaker_ring]\nringfile = /x/ring.json\n",
    "[DEFAULT]\nmatchmaker_ringfile = /x/ring.json\n",
    "[DEFAULT]\nrpc_zmq_matchmaker_ringfile = /x/ring.json\n",
])
def test_every_ringfile_spelling_in_ini(tmp_path, text):
    assert read(write(tmp_path, "n.conf", text)).matchmaker_ringfile == \
        "/x/ring.json"


@pytest.mark.parametrize("flag", ["matchmaker_ringfile",
                                  "rpc_zmq_matchmaker_ringfile"])
def test_every_ringfile_spelling_in_flagfile(tmp_path, flag):
    path = write(tmp_path, "nova.conf", "--%s=/y/ring.json\n" % flag)
    assert read(path).matchmaker_ringfile == "/y/ring.json"


def test_sql_connection_legacy_name(tmp_path):
    path = write(tmp_path, "n.conf",
                 "[DEFAULT]\nsql_connection = mysql://a@b/c\n")
    assert read(path).database_connection == "mysql://a@b/c"


def test_ini_bad_value_names_option_and_file(tmp_path):
    path = write(tmp_path, "n.conf", "[DEFAULT]\nrpc_zmq_port = abc\n")
    with pytest.raises(ConfigurationError) as err:
        read(path)
    assert "rpc_zmq_port" in str(err.value) and str(path) in str(err.value)


def test_value_error_names_the_file_that_set_it(tmp_path):
    path = write(tmp_path, "n.conf", "[DEFAULT]\nrpc_zmq_port = 70000\n")
    with pytest.raises(ConfigurationError) as err:
        read(path)
    text = str(err.value)
    assert "rpc_zmq_port = 70000" in text and str(path) in text
    assert "between 1 and 65535" in text


@pytest.mark.parametrize("name, text, words", [
    ("n.conf", "[DEFAULT]\nrpc_zmq_port = 70000\n",
     "rpc_zmq_port = 70000 (set in %s) is not a valid port; use a TCP port "
     "number between 1 and 65535"),
    ("n.conf", "[DEFAULT]\nrpc_zmq_topic_backlog = 0\n",
     "rpc_zmq_topic_backlog = 0 (set in %s) is out of range; use a number at "
     "least 1"),
    ("n.conf", "[DEFAULT]\nservicegroup_driver = redis\n",
     "servicegroup_driver = 'redis' (set in %s) is not supported; accepted "
     "values: db, mc, zk"),
    ("nova.conf", "--rpc_zmq_host=a\n--rpc_zmq_port=70000\n",
     "rpc_zmq_port = 70000 (set in %s) is not a valid port; use a TCP port "
     "number between 1 and 65535"),
])
def test_typed_options_keep_our_error_messages(tmp_path, name, text, words):
    """oslo.config knows each option's type, range and choices (it refuses
    the value itself when read directly), yet the operator still gets our
    message: option, value, the file that set it (the flagfile, not its
    translation), the fix."""
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigurationError) as err:
        read(path)
    assert str(err.value).startswith(words % path), str(err.value)
    option = text.split("\n")[1].split(" = ")[0]
    if option.startswith("rpc_zmq_"):  # registered on CONF by the import
        with pytest.raises(cfg.ConfigFileValueError):
            getattr(config.CONF, option)


def test_options_are_declared_with_types_ranges_and_choices():
    """What oslo-config-generator and oslo-config-validator read."""
    opts = options.OPTS
    assert isinstance(opts[(None, "rpc_zmq_port")], cfg.PortOpt)
    assert (opts[(None, "rpc_zmq_port")].type.min,
            opts[(None, "rpc_zmq_port")].type.max) == (1, 65535)
    assert opts[(None, "rpc_zmq_health_port")].type.min == 0
    assert opts[(None, "rpc_zmq_max_msg_size")].type.min == 1
    assert opts[(None, "rpc_zmq_drain_timeout")].type.min == 0
    assert {"db", "zk", "mc", "nova.servicegroup.drivers.zk.ZooKeeperDriver"} \
        <= set(opts[(None, "servicegroup_driver")].type.choices)
    assert "impl_zmq" in opts[(None, "rpc_backend")].type.choices
    for group in config.GROUP_OPTS:
        assert options.GROUPS[group].help
    config.register_opts(config.CONF)
    assert config.CONF.zookeeper.recv_timeout == 4000
    assert config.CONF._get_group("zookeeper").help == \
        options.GROUPS["zookeeper"].help


def test_legacy_spelling_accepted_by_the_typed_option(tmp_path):
    path = write(tmp_path, "n.conf", "[DEFAULT]\nservicegroup_driver = "
                 "nova.servicegroup.drivers.mc.MemcachedDriver\n")
    assert read(path).servicegroup_driver == "mc"


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.conf"
    with pytest.raises(ConfigurationError, match="nope.conf"):
        read(missing)


def test_broken_ini_syntax(tmp_path):
    path = write(tmp_path, "n.conf", "[DEFAULT\nrpc_zmq_port = 1\n")
    with pytest.raises(ConfigurationError, match="n.conf"):
        read(path)


# -- flagfiles ---------------------------------------------------------------

FLAGFILE = """\
# an Essex nova.conf
--rpc_backend=nova.rpc.impl_zmq

--rpc_zmq_matchmaker=nova.rpc.matchmaker.MatchMakerRing
--rpc_zmq_port=9601
--rpc_zmq_port=9602
--rpc_zmq_curve
--verbose
--nodaemon
--logdir=/var/log/nova
   # indented comment
--allowed_rpc_exception_modules=nova.exception,builtins
--zookeeper_address=10.1.1.1:2181
"""


def test_flagfile(tmp_path):
    s = read(write(tmp_path, "nova.conf", FLAGFILE))
    assert s.rpc_backend == "impl_zmq"
    assert s.rpc_zmq_matchmaker == "ring"
    assert s.rpc_zmq_port == 9602            # the later line wins
    assert s.rpc_zmq_curve is True
    assert s.allowed_rpc_exception_modules == ("nova.exception", "builtins")
    assert s.zookeeper_address == "10.1.1.1:2181"


def test_noflag_sets_boolean_false(tmp_path):
    ini = write(tmp_path, "a.conf", "[DEFAULT]\nrpc_zmq_curve = true\n")
    flags = write(tmp_path, "b.conf", "--norpc_zmq_curve\n")
    assert read(ini).rpc_zmq_curve is True
    assert read(ini, flags).rpc_zmq_curve is False


def test_flagfile_and_ini_in_one_call(tmp_path):
    ini = write(tmp_path, "nova.conf", "[DEFAULT]\nrpc_zmq_port = 9700\n"
                                       "rpc_zmq_host = inihost\n")
    flags = write(tmp_path, "flags.conf", "--rpc_zmq_host=flaghost\n")
    s = read(ini, flags)
    assert (s.rpc_zmq_port, s.rpc_zmq_host) == (9700, "flaghost")


def test_flagfile_include(tmp_path):
    write(tmp_path, "common.flags", "--rpc_zmq_port=9801\n--rpc_zmq_host=h2\n")
    main = write(tmp_path, "nova.conf",
                 "--rpc_zmq_port=1\n--flagfile=common.flags\n"
                 "--rpc_zmq_host=h3\n")
    s = read(main)
    assert (s.rpc_zmq_port, s.rpc_zmq_host) == (9801, "h3")


def test_flagfile_include_loop(tmp_path):
    write(tmp_path, "a.flags", "--flagfile=b.flags\n")
    write(tmp_path, "b.flags", "--flagfile=a.flags\n")
    with pytest.raises(ConfigurationError, match="loop"):
        read(tmp_path / "a.flags")


@pytest.mark.parametrize("line, words", [
    ("rpc_zmq_port=9501", ["is not a flag", "--name=value"]),
    ("--rpc zmq=1", ["not a valid flag name"]),
    ("--rpc_zmq_prot=9501", ["unknown flag --rpc_zmq_prot",
                             "did you mean --rpc_zmq_port?"]),
    ("--rpc_zmq_whatever=1", ["unknown flag --rpc_zmq_whatever"]),
    ("--rpc_zmq_port=abc", ["invalid value 'abc' for --rpc_zmq_port"]),
    ("--rpc_zmq_port", ["--rpc_zmq_port needs a value",
                        "--rpc_zmq_port=VALUE"]),
    ("--norpc_zmq_port", ["only boolean flags"]),
    ("--rpc_zmq_curve=maybe", ["invalid value 'maybe'"]),
])
def test_bad_flagfile_line_names_original_file_and_line(tmp_path, line, words):
    path = write(tmp_path, "nova.conf",
                 "# header\n--rpc_zmq_host=a\n\n%s\n--rpc_zmq_port=1\n" % line)
    with pytest.raises(ConfigurationError) as err:
        read(path)
    text = str(err.value)
    assert text.startswith("%s line 4: " % path), text
    for word in words:
        assert word in text


def test_flagfile_translation_is_private_and_cleaned(tmp_path):
    flags = write(tmp_path, "nova.conf", "--rpc_zmq_port=9601\n")
    translator = config.flagfiles(config.CONF)
    ini = translator.as_ini(str(flags))
    assert stat.S_IMODE(os.stat(os.path.dirname(ini)).st_mode) == 0o700
    assert "rpc_zmq_port = 9601" in Path(ini).read_text()
    assert translator.original_path(ini) == str(flags)
    config.reset()
    assert not os.path.exists(os.path.dirname(ini))
    # a full parse leaves no translated file behind, not even until exit
    assert read(flags).rpc_zmq_port == 9601
    (translated,) = translator._translated
    assert not os.path.exists(translated)
    assert translator.original_path(translated) == str(flags)
    with pytest.raises(ConfigurationError):
        read(write(tmp_path, "bad.conf", "--rpc_zmq_port=1\n--rpc_zmq_prot=2\n"))
    assert translator._flag_dir is None


def test_file_starting_with_comment_then_flags_is_a_flagfile(tmp_path):
    path = write(tmp_path, "n.conf", "\n# c\n\n--rpc_zmq_port=9333\n")
    assert read(path).rpc_zmq_port == 9333


# -- accepted spellings ------------------------------------------------------

@pytest.mark.parametrize("value, canonical", [
    ("nova.rpc.impl_zmq", "impl_zmq"),
    ("nova.openstack.common.rpc.impl_zmq", "impl_zmq"),
    ("impl_zmq", "impl_zmq"),
    ("nova_rpc_zmq.impl_zmq", "impl_zmq"),
    ("nova_rpc_zmq.rpc.impl_zmq", "impl_zmq"),
    ("impl_fake", "impl_fake"),
    ("nova.rpc.impl_fake", "impl_fake"),
    ("nova.openstack.common.rpc.impl_fake", "impl_fake"),
])
def test_backend_spellings(tmp_path, value, canonical):
    path = write(tmp_path, "n.conf", "[DEFAULT]\nrpc_backend = %s\n" % value)
    assert read(path).rpc_backend == canonical


@pytest.mark.parametrize("value, canonical", [
    ("ring", "ring"), ("localhost", "localhost"), ("stub", "stub"),
    ("nova.rpc.matchmaker.MatchMakerRing", "ring"),
    ("nova.rpc.matchmaker.MatchMakerLocalhost", "localhost"),
    ("nova.rpc.matchmaker.MatchMakerStub", "stub"),
    ("nova.openstack.common.rpc.matchmaker.MatchMakerRing", "ring"),
    ("nova.openstack.common.rpc.matchmaker_ring.MatchMakerRing", "ring"),
    ("nova.openstack.common.rpc.matchmaker.MatchMakerLocalhost", "localhost"),
    ("nova.openstack.common.rpc.matchmaker.MatchMakerStub", "stub"),
    ("oslo_messaging._drivers.matchmaker_ring.MatchMakerRing", "ring"),
    ("oslo.messaging._drivers.matchmaker_ring:MatchMakerRing", "ring"),
    ("nova_rpc_zmq.matchmaker.ring:RingMatchMaker", "ring"),
])
def test_matchmaker_spellings(value, canonical):
    s = config.load_settings(config.CONF, rpc_zmq_matchmaker=value)
    assert s.rpc_zmq_matchmaker == canonical


@pytest.mark.parametrize("value, canonical", [
    ("db", "db"), ("zk", "zk"), ("mc", "mc"),
    ("nova.servicegroup.drivers.db.DbDriver", "db"),
    ("nova.servicegroup.drivers.zk.ZooKeeperDriver", "zk"),
    ("nova.servicegroup.drivers.mc.MemcachedDriver", "mc"),
])
def test_servicegroup_spellings(value, canonical):
    s = config.load_settings(config.CONF, servicegroup_driver=value,
                             zookeeper_address="127.0.0.1:2181")
    assert s.servicegroup_driver == canonical


@pytest.mark.parametrize("field, value, accepted", [
    ("rpc_backend", "nova.rpc.impl_kombu", ["impl_zmq", "impl_fake",
                                            "nova.rpc.impl_zmq"]),
    ("rpc_zmq_matchmaker", "nova.rpc.matchmaker.MatchMakerRedis",
     ["ring", "localhost", "stub", "nova.rpc.matchmaker.MatchMakerRing"]),
    ("servicegroup_driver", "redis", ["db", "zk", "mc",
                                      "nova.servicegroup.drivers.db.DbDriver"]),
])
def test_unknown_value_error_text(tmp_path, field, value, accepted):
    path = write(tmp_path, "n.conf", "[DEFAULT]\n%s = %s\n" % (field, value))
    with pytest.raises(ConfigurationError) as err:
        read(path)
    text = str(err.value)
    assert text.startswith("%s = %r (set in %s) is not supported"
                           % (field, value, path)), text
    assert "accepted values: " in text
    for name in accepted:
        assert name in text


# -- ranges and formats ------------------------------------------------------

@pytest.mark.parametrize("field, value, words", [
    ("rpc_zmq_port", 0, "between 1 and 65535"),
    ("rpc_zmq_port", 65536, "between 1 and 65535"),
    ("rpc_zmq_start_port", -1, "between 1 and 65535"),
    ("rpc_zmq_health_port", 65536, "between 0 and 65535"),
    ("rpc_response_timeout", 0, "greater than 0"),
    ("rpc_cast_timeout", -3, "greater than 0"),
    ("rpc_thread_pool_size", 0, "at least 1"),
    ("rpc_zmq_contexts", 0, "at least 1"),
    ("rpc_zmq_topic_backlog", 0, "at least 1"),
    ("rpc_zmq_topic_backlog_bytes", 0, "at least 1"),
    ("rpc_zmq_health_stuck_after", 0, "greater than 0"),
    ("rpc_zmq_health_bind_address", " ", "is empty"),
    ("rpc_zmq_max_frames", 0, "at least 1"),
    ("zookeeper_recv_timeout", 0, "greater than 0"),
    ("rpc_zmq_host", "bad host", "host name"),
    ("rpc_zmq_host", "", "is empty"),
    ("rpc_zmq_ipc_dir", "/" + "d" * 120, "too long"),
    ("zookeeper_address", "zk1", "host:port"),
    ("memcached_servers", ["mc1"], "host:port"),
    ("zookeeper_sg_prefix", "servicegroups", "start it with '/'"),
    ("database_connection", "nova.sqlite", "database URL"),
    ("service_down_time", 5, "2.5 x report_interval"),
])
def test_range_and_format_errors(field, value, words):
    with pytest.raises(ConfigurationError) as err:
        config.load_settings(config.CONF, **{field: value})
    assert config.option_name(field) in str(err.value)
    assert words in str(err.value)


def test_edge_values_accepted():
    s = config.load_settings(config.CONF, rpc_zmq_port=1,
                             rpc_zmq_start_port=65535, rpc_zmq_health_port=0,
                             rpc_zmq_topic_backlog=1, rpc_response_timeout=0.5)
    assert (s.rpc_zmq_port, s.rpc_zmq_health_port,
            s.rpc_zmq_topic_backlog) == (1, 0, 1)
    assert s.rpc_response_timeout == 0.5


def test_health_port_follows_rpc_zmq_port():
    """Unset: rpc_zmq_port + 2, so receivers on other ports coexist."""
    s = config.load_settings(config.CONF, rpc_zmq_port=9601)
    assert s.rpc_zmq_health_port == 9603
    s = config.load_settings(config.CONF, rpc_zmq_port=9601, rpc_zmq_health_port=0)
    assert s.rpc_zmq_health_port == 0
    with pytest.raises(ConfigurationError, match="rpc_zmq_health_port"):
        config.load_settings(config.CONF, rpc_zmq_port=65535)


def test_zk_driver_needs_an_address():
    with pytest.raises(ConfigurationError, match=r"\[zookeeper\] address"):
        config.load_settings(config.CONF, servicegroup_driver="zk")


def test_parse_args(tmp_path):
    path = write(tmp_path, "n.conf", "[DEFAULT]\nrpc_zmq_port = 9444\n")
    assert config.parse_args([], default_config_files=[str(path)]
                             ).rpc_zmq_port == 9444
    assert config.parse_args(["--config-file", str(path)],
                             default_config_files=[]).rpc_zmq_port == 9444


def test_default_files_are_not_read_when_a_file_is_given(tmp_path):
    broken = write(tmp_path, "default.conf", "--rpc_zmq_prot=1\n")
    given = write(tmp_path, "given.conf", "[DEFAULT]\nrpc_zmq_port = 9446\n")
    assert config.parse_args(["--config-file", str(given)],
                             default_config_files=[str(broken)]).rpc_zmq_port == 9446
    with pytest.raises(ConfigurationError, match="rpc_zmq_prot"):
        config.parse_args([], default_config_files=[str(broken)])


def test_default_config_file_may_be_a_flagfile(tmp_path):
    path = write(tmp_path, "nova.conf", "--rpc_zmq_port=9445\n")
    assert config.parse_args([], default_config_files=[str(path)]
                             ).rpc_zmq_port == 9445


def test_layers_below_rpc_do_not_read_global_config():
    """DESIGN: config is passed down as Settings, not read below rpc/.

    The entry points that Nova-era code calls with a ConfigOpts or with
    nothing (the drop-in ``impl_zmq`` functions, ``servicegroup.API()``)
    derive their Settings once through ``config.settings_for``."""
    package = ROOT / "nova_rpc_zmq"
    below = [package / name for name in ("runner.py", "codec.py", "zmqio.py",
                                         "validation.py")] + [
        p for sub in ("wire", "matchmaker", "impl_zmq", "receiver", "servicegroup",
                      "security", "oslo_driver")
        for p in (package / sub).rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in below if p.exists()
                 and ("config.CONF" in p.read_text()
                      or "import CONF" in p.read_text())]
    assert offenders == []


# -- the example files -------------------------------------------------------

def test_example_all_in_one_conf():
    s = read(RINGFILES / "nova.conf.all-in-one")
    assert (s.rpc_backend, s.rpc_zmq_matchmaker, s.rpc_zmq_host) == \
        ("impl_zmq", "ring", "127.0.0.1")
    assert s.matchmaker_ringfile == "/etc/oslo/matchmaker_ring.json"


def test_example_controller_computes_conf():
    s = read(RINGFILES / "nova.conf.controller-computes")
    assert (s.rpc_zmq_matchmaker, s.rpc_zmq_host) == ("ring", "controller1")
    assert s.rpc_zmq_curve is True
    assert s.rpc_zmq_curve_key_file and s.rpc_zmq_curve_keys_dir
    assert s.servicegroup_driver == "zk" and s.zookeeper_address


def test_example_essex_flagfile():
    s = read(RINGFILES / "nova.flagfile.essex")
    assert (s.rpc_backend, s.rpc_zmq_matchmaker) == ("impl_zmq", "ring")
    assert s.matchmaker_ringfile == "/etc/nova/matchmaker_ring.json"
    assert s.rpc_zmq_host == "compute1"
    assert s.database_connection.startswith("mysql://")
    assert s.rpc_zmq_curve is False


def test_conf_is_an_oslo_config_object():
    assert isinstance(config.CONF, cfg.ConfigOpts)


def test_io_batch_can_be_turned_off(tmp_path):
    s = read(write(tmp_path, "nova.conf", "[DEFAULT]\nrpc_zmq_io_batch = false\n"))
    assert s.rpc_zmq_io_batch is False


def test_local_calls_are_on_unless_turned_off(tmp_path):
    assert read(write(tmp_path, "a.conf", "[DEFAULT]\n")).rpc_zmq_local_calls is True
    s = read(write(tmp_path, "b.conf", "[DEFAULT]\nrpc_zmq_local_calls = false\n"))
    assert s.rpc_zmq_local_calls is False
    with pytest.raises(config.ConfigurationError) as err:
        read(write(tmp_path, "c.conf", "[DEFAULT]\nrpc_zmq_local_calls = maybe\n"))
    assert "rpc_zmq_local_calls" in str(err.value)
