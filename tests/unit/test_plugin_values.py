"""Property values between the plugin's wire and amdfleet's providers
(amdfleet/plugin/values.py): every value a provider returns comes back to a provider
as it was, through the protobuf the engine stores (numbers as floats), secrets stay
marked at any depth, unknowns stay unknown, and a value JSON cannot carry is refused."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2
from pulumi.output import Unknown
from pulumi.provider.experimental.property_value import PropertyValue
from pulumi.runtime import rpc

from amdfleet.plugin.values import from_python, map_from_python, map_to_python, to_python
from amdfleet.providers.props import plain


def through_the_wire(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` sent by the plugin and received back in a later request."""
    wire = PropertyValue.marshal_map(map_from_python(values))
    stored = struct_pb2.Struct()
    stored.ParseFromString(wire.SerializeToString())
    return map_to_python(PropertyValue.unmarshal_map(stored))


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        "text",
        1.5,
        [],
        {},
        ["a", 2.0, None, [True]],
        {"nested": {"deeper": ["x", {"y": None}]}},
    ],
    ids=repr,
)
def test_json_values_come_back_as_they_were(value: Any) -> None:
    assert through_the_wire({"v": value}) == {"v": value}


def test_ints_come_back_as_floats_at_any_depth() -> None:
    back = through_the_wire({"port": 8000, "ports": [1, 2], "nested": {"count": 3}})
    assert back == {"port": 8000.0, "ports": [1.0, 2.0], "nested": {"count": 3.0}}
    assert all(type(v) is float for v in (back["port"], *back["ports"], back["nested"]["count"]))
    assert through_the_wire({"flag": True})["flag"] is True  # a bool is not an int here


def test_secrets_stay_marked_where_they_were_nested() -> None:
    values = {
        "api_key": rpc.wrap_rpc_secret("sk-1"),
        "env": {"PLAIN": "1", "TOKEN": rpc.wrap_rpc_secret("hf-2")},
        "keys": [rpc.wrap_rpc_secret("k-3"), "public"],
        "whole": rpc.wrap_rpc_secret({"a": 1, "b": ["c"]}),
    }
    back = through_the_wire(values)
    assert back == {**values, "whole": rpc.wrap_rpc_secret({"a": 1.0, "b": ["c"]})}
    assert rpc.is_rpc_secret(back["env"]["TOKEN"]) and not rpc.is_rpc_secret(back["env"])
    assert plain(back) == {
        "api_key": "sk-1",
        "env": {"PLAIN": "1", "TOKEN": "hf-2"},
        "keys": ["k-3", "public"],
        "whole": {"a": 1.0, "b": ["c"]},
    }
    marked = map_from_python(values)
    assert marked["api_key"].is_secret and not marked["env"].is_secret
    assert marked["env"].value["TOKEN"].is_secret


def test_unknowns_stay_unknown_and_use_the_wire_sentinel() -> None:
    back = through_the_wire({"address": Unknown(), "nodes": [Unknown(), "n1"]})
    assert isinstance(back["address"], Unknown) and isinstance(back["nodes"][0], Unknown)
    assert back["nodes"][1] == "n1"
    # What the engine sends during a preview: the sentinel string, which the SDK's
    # PropertyValue reads as a plain string.
    assert isinstance(to_python(PropertyValue(rpc.UNKNOWN)), Unknown)
    assert from_python(Unknown()).marshal().string_value == rpc.UNKNOWN
    secret_unknown = through_the_wire({"token": rpc.wrap_rpc_secret(Unknown())})
    assert isinstance(rpc.unwrap_rpc_secret(secret_unknown["token"]), Unknown)


@pytest.mark.parametrize(
    ("value", "kind"),
    [({1, 2}, "set"), (b"raw", "bytes"), (object(), "object"), ({"k": {"v": 1j}}, "complex")],
    ids=["set", "bytes", "object", "nested complex"],
)
def test_a_value_json_cannot_carry_is_refused_naming_its_type(value: Any, kind: str) -> None:
    with pytest.raises(TypeError, match=f"a provider returned a {kind}, not a JSON value"):
        map_from_python({"v": value})
