"""No module of nova_rpc_zmq can unpickle data from a socket or a back end.

Unpickling (and its cousins: marshal, shelve, jsonpickle, unsafe YAML,
pyzmq's ``recv_pyobj``) runs code chosen by whoever wrote the bytes, so a
peer on the network or anyone who can write to memcached would own every
service.  The first test reads every module's source (AST, no import, so a
module that fails to import is still checked) and rejects any way in; the
others check that the third-party client we build, python-memcached's, is
configured so that it cannot unpickle either.
"""

from __future__ import annotations

import ast
import io
import os
import pickle
from pathlib import Path
from typing import Any, Iterator

import pytest

import nova_rpc_zmq
from nova_rpc_zmq.servicegroup.drivers import mc

PACKAGE_DIR = Path(nova_rpc_zmq.__file__).resolve().parent

#: modules that deserialise by running code (or hand data to such code)
BANNED_MODULES = {
    "pickle": "runs code chosen by whoever wrote the bytes",
    "_pickle": "the C half of pickle",
    "cPickle": "pickle",
    "cloudpickle": "pickle",
    "dill": "pickle",
    "pickletools": "pickle's tools invite pickle",
    "marshal": "loads code objects",
    "shelve": "a pickle store",
    "jsonpickle": "JSON that rebuilds arbitrary objects",
    "multiprocessing": "its queues and connections unpickle what they read",
}
#: attribute names that unpickle (pyzmq's recv_pyobj, a custom
#: recv_serialized, SQLAlchemy's PickleType, a process pool's pickles)
BANNED_ATTRIBUTES = {
    "recv_pyobj": "pyzmq unpickles the frame",
    "send_pyobj": "sends a pickle: asks the peer to unpickle",
    "recv_serialized": "runs a deserialiser of the caller's choice",
    "send_serialized": "pairs with recv_serialized",
    "PickleType": "SQLAlchemy unpickles the column",
    "ProcessPoolExecutor": "pickles every argument and result",
}
#: yaml functions and loaders that can build arbitrary objects
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load",
               "full_load_all", "Loader", "UnsafeLoader", "FullLoader"}
#: builtins that run text as code
BANNED_CALLS = {"eval", "exec"}


def _modules() -> Iterator[Path]:
    for root, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(root) / name


def _top(module: str | None) -> str:
    return (module or "").split(".")[0]


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ''."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def problems_in(source: str, filename: str) -> list[str]:
    """Every way ``source`` could unpickle, as 'file:line: what (why)'."""
    tree = ast.parse(source, filename)
    found: list[str] = []

    def bad(node: ast.AST, what: str, why: str) -> None:
        found.append("%s:%d: %s (%s)" % (filename, getattr(node, "lineno", 0), what, why))

    yaml_names = {"yaml"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _top(alias.name) in BANNED_MODULES:
                    bad(node, "import %s" % alias.name, BANNED_MODULES[_top(alias.name)])
                if _top(alias.name) == "yaml" and alias.asname:
                    yaml_names.add(alias.asname)
        elif isinstance(node, ast.ImportFrom):
            top = _top(node.module)
            if node.level == 0 and top in BANNED_MODULES:
                bad(node, "from %s import ..." % node.module, BANNED_MODULES[top])
            if node.level == 0 and top == "yaml":
                for alias in node.names:
                    if alias.name in UNSAFE_YAML:
                        bad(node, "from yaml import %s" % alias.name,
                            "unsafe YAML builds arbitrary objects; use safe_load")
            for alias in node.names:
                if alias.name in BANNED_ATTRIBUTES:
                    bad(node, "import of %s" % alias.name, BANNED_ATTRIBUTES[alias.name])
        elif isinstance(node, ast.Attribute):
            if node.attr in BANNED_ATTRIBUTES:
                bad(node, ".%s" % node.attr, BANNED_ATTRIBUTES[node.attr])
            if node.attr in UNSAFE_YAML and isinstance(node.value, ast.Name) \
                    and node.value.id in yaml_names:
                bad(node, "yaml.%s" % node.attr,
                    "unsafe YAML builds arbitrary objects; use safe_load")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in BANNED_CALLS:
                bad(node, "%s()" % name, "runs text as code")
            if name in ("__import__", "importlib.import_module", "import_module"):
                for arg in node.args[:1]:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
                            and _top(arg.value) in set(BANNED_MODULES) | {"yaml"}:
                        bad(node, "%s(%r)" % (name, arg.value), "dynamic import of a "
                            "deserialiser")
            # python-memcached's Client unpickles flag-1 values unless its
            # unpickler is replaced: every construction must replace it
            if name in ("memcache.Client", "Client") and not any(
                    kw.arg == "unpickler" for kw in node.keywords):
                bad(node, "%s() without unpickler=" % name,
                    "python-memcached unpickles values stored with flag 1; "
                    "build the client with mc.make_client")
    return found


def test_no_module_can_unpickle() -> None:
    """No import of pickle & co., no recv_pyobj, no unsafe YAML, no eval,
    no python-memcached Client left with its default unpickler."""
    files = list(_modules())
    assert len(files) > 30, "the package was not found at %s" % PACKAGE_DIR
    found: list[str] = []
    for path in files:
        found += problems_in(path.read_text(encoding="utf-8"),
                             str(path.relative_to(PACKAGE_DIR.parent)))
    assert not found, "ways to unpickle data from the network or a back end:\n" \
        + "\n".join(found)


@pytest.mark.parametrize("source", [
    "import pickle",
    "import cPickle as json",
    "from pickle import loads as parse",
    "import marshal",
    "from shelve import open",
    "import jsonpickle",
    "import multiprocessing.connection",
    "frames = sock.recv_pyobj()",
    "x = s.recv_serialized(lambda f: f)",
    "import yaml\nyaml.load(text)",
    "import yaml as y\ny.load(text, Loader=y.Loader)",
    "from yaml import unsafe_load",
    "importlib.import_module('pickle')",
    "__import__('marshal')",
    "eval(data)",
    "memcache.Client(['h:1'])",
    "import sqlalchemy as sa\nsa.Column('x', sa.PickleType)",
])
def test_checker_catches(source: str) -> None:
    """The checker itself sees each way in (so a pass above means something)."""
    assert problems_in(source, "<sample>"), source


@pytest.mark.parametrize("source", [
    "import json\njson.loads(b)",
    "import yaml\nyaml.safe_load(text)",
    "msg = sock.recv_json()",
    "make_client(['h:1'], 1.0, 1.0)",
    "memcache.Client(['h:1'], unpickler=RefusingUnpickler)",
])
def test_checker_allows_safe_code(source: str) -> None:
    """Safe look-alikes pass the checker."""
    assert problems_in(source, "<sample>") == [], source


class _Marker:
    """Unpickling this creates ``path``: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "a"))


def _memcache_client() -> Any:
    """The python-memcached client our mc driver builds (no connection is
    made until it is used; port 9 has nothing listening)."""
    store = mc.MemcachedStore(["127.0.0.1:9"], socket_timeout=0.2, dead_retry=1.0)
    return store._client


def test_memcache_client_refuses_to_unpickle(tmp_path: Path) -> None:
    """The client's unpickler refuses a pickle and runs none of it."""
    marker = tmp_path / "marker"
    payload = pickle.dumps(_Marker(str(marker)))
    client = _memcache_client()
    try:
        with pytest.raises(Exception):
            client.unpickler(io.BytesIO(payload)).load()
        assert not marker.exists(), "the memcached client unpickled a value"
    finally:
        client.disconnect_all()


def test_memcache_client_never_writes_or_inflates_pickles() -> None:
    """The client cannot write a pickle (only str values are stored) and
    does not decompress values (a planted bomb)."""
    import zlib
    client = _memcache_client()
    try:
        with pytest.raises(TypeError):
            client._val_to_store_info({"t": 1.0}, 0)
        flags, _, stored = client._val_to_store_info('{"t": 1.0}', 0)
        assert flags == 16 and stored == b'{"t": 1.0}'  # text, not pickle
        with pytest.raises(Exception):
            client.decompressor(zlib.compress(b"\0" * 1000))
    finally:
        client.disconnect_all()
