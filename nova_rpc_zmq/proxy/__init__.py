"""The ROUTER proxy daemon (``nova-rpc-zmq-proxy``, also installed as
``oslo-messaging-zmq-proxy``) for ``[oslo_messaging_zmq] use_router_proxy``
and ``use_pub_sub``.

* ``config``: the ``[zmq_proxy_opts]`` options and the start checks.
* ``router``: the forwarding loop (two ROUTER sockets, one poller).
* ``publisher``: the PUB socket of a publisher proxy (``use_pub_sub``)
  and the local publisher (``--local-publisher``).
* ``announce``: the proxy's registration in the matchmaker.
* ``exposition``: its ``/metrics`` page.

The driver's side is ``nova_rpc_zmq/oslo_driver/proxied.py``.
"""
