"""The committed sample configuration is what the code generates now."""

from __future__ import annotations

import difflib
import os

from oslo_config import generator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "etc", "nova-rpc-zmq.conf.sample")
GENERATOR_CONF = os.path.join(ROOT, "etc", "nova-rpc-zmq-config-generator.conf")


def test_sample_config_is_up_to_date(tmp_path):
    out = tmp_path / "sample.conf"
    generator.main(["--config-file", GENERATOR_CONF, "--output-file", str(out)])
    with open(SAMPLE, encoding="utf-8") as f:
        committed = f.read()
    fresh = out.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True),
                                        "committed", "generated", n=1))
    assert fresh == committed, (
        "etc/nova-rpc-zmq.conf.sample is stale; regenerate it with\n"
        "  oslo-config-generator --config-file etc/nova-rpc-zmq-config-generator.conf\n"
        + diff[:3000])


def test_every_option_is_in_the_sample():
    from nova_rpc_zmq.opts import list_opts
    with open(SAMPLE, encoding="utf-8") as f:
        text = f.read()
    for group, opts in list_opts():
        assert "[%s]" % getattr(group, "name", group) in text
        for opt in opts:
            assert "#%s = " % opt.dest in text or "#%s =\n" % opt.dest in text, opt.dest
