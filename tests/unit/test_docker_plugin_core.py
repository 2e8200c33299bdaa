"""The weavemesh plugin's answers as data (libnetwork's remote driver and IPAM protocols)."""

from __future__ import annotations

import ipaddress

import pytest

from weaved.docker import core
from weaved.docker.core import PluginError


def test_plugin_name_is_the_socket_file_name() -> None:
    assert core.plugin_name("/run/docker/plugins/weavemesh.sock") == "weavemesh"


def test_veth_names_are_weaves_and_fit_ifnamsiz() -> None:
    host, peer = core.veth_pair("73bf08058221abcdef")
    assert (host, peer) == ("vethwl73bf08058", "vethwg73bf08058")
    assert len(host) == 15
    with pytest.raises(PluginError):
        core.veth_pair("../x")


def test_pool_round_trips_and_has_a_fake_gateway() -> None:
    pool, answer = core.request_pool({"Pool": "10.32.5.0/24", "SubPool": "10.32.5.128/25"}, "x")
    assert answer == {
        "PoolID": "weave-10.32.5.0/24-10.32.5.128/25",
        "Pool": "10.32.5.0/24",
        "Data": {"com.docker.network.gateway": "10.32.5.0/24"},
    }
    assert core.parse_pool_id(pool.pool_id) == pool
    default, _ = core.request_pool({}, "10.32.0.0/12")
    assert default.subnet == default.iprange == ipaddress.IPv4Network("10.32.0.0/12")


@pytest.mark.parametrize(
    "body",
    [{"V6": True}, {"Pool": "nonsense"}, {"Pool": "10.1.0.0/16", "SubPool": "10.2.0.0/24"}],
)
def test_bad_pools_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(PluginError):
        core.request_pool(body, "10.32.0.0/12")


def test_requested_address_inside_the_pool_only() -> None:
    pool_id = "weave-10.32.5.0/24-10.32.5.0/24"
    assert core.requested_address({"PoolID": pool_id})[1] is None
    assert str(core.requested_address({"PoolID": pool_id, "Address": "10.32.5.7"})[1]) == (
        "10.32.5.7"
    )
    with pytest.raises(PluginError):
        core.requested_address({"PoolID": pool_id, "Address": "10.9.9.9"})
    with pytest.raises(PluginError, match="Unrecognized pool ID"):
        core.requested_address({"PoolID": "weavepool-x"})


def test_multicast_option_as_weave_reads_it() -> None:
    def opts(value: str) -> dict[str, object]:
        return {core.GENERIC_DATA: {core.MULTICAST_OPTION: value}}

    assert core.multicast_of(opts("")) and core.multicast_of(opts("true"))
    assert not core.multicast_of(opts("false")) and not core.multicast_of({})
    with pytest.raises(PluginError, match="unrecognized value"):
        core.multicast_of(opts("maybe"))


def test_join_names_ethwe_and_adds_on_link_routes() -> None:
    answer = core.join_answer("0123456789abcdef", multicast=True, dns_route=True)
    assert answer["InterfaceName"] == {"SrcName": "vethwg012345678", "DstPrefix": "ethwe"}
    assert [r["Destination"] for r in answer["StaticRoutes"]] == [
        "224.0.0.0/4",
        "169.254.53.53/32",
    ]
    assert "StaticRoutes" not in core.join_answer("0123456789abcdef", False, False)
