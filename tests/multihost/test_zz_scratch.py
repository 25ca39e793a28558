import pytest
pytestmark = pytest.mark.timeout(180)

@pytest.fixture(scope="module")
def cluster(netns_cluster_factory):
    return netns_cluster_factory(hosts=3, options={"rpc_response_timeout": 7})

def test_fails(cluster):
    h = cluster.host(2)
    h.kill_service()
    p = h.restart_service()
    assert cluster.host_of_pid(p.pid) == "h2"
    r = cluster.host(1).client([{"op":"call","topic":"demo_h2","method":"whoami","repeat":1}])
    assert r["results"][0][0]["ok"]["pid"] == p.pid
    h.stop_service()
    r = cluster.host(1).client([{"op":"call","topic":"demo_h2","method":"whoami","timeout":2}])
    print(r)
    assert r["results"][0][0]["error"] == "Timeout"
    print(open(h.conf_path).read())
    assert False, "deliberate"
