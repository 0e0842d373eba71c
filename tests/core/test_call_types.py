"""A handler's ``Call[Body, Query]`` must name the models its operation validates."""

from __future__ import annotations

import re

import pytest

from server.core.api import Call, Routes, Strict


class Booking(Strict):
    slot_id: int


class Other(Strict):
    note: str


class Paging(Strict):
    limit: int = 20


def test_a_handler_naming_its_declared_models_is_accepted() -> None:
    routes = Routes(tag="test")

    @routes.op("POST", "/x", summary="x", body=Booking, query=Paging)
    async def book(call: Call[Booking, Paging]) -> None:
        return None

    @routes.op("GET", "/y", summary="y")
    async def plain(call: Call[None, None]) -> None:
        return None

    @routes.op("GET", "/z", summary="z", body=Other)
    async def untyped(call: Call) -> None:  # a bare Call (Any) is not checked
        return None

    assert [op.operation_id for op in routes.operations] == ["book", "plain", "untyped"]


def test_a_handler_naming_other_models_is_refused_at_import() -> None:
    routes = Routes(tag="test")
    with pytest.raises(TypeError, match="its Call names Booking"):

        @routes.op("POST", "/x", summary="x", body=Other)
        async def book(call: Call[Booking, None]) -> None:
            return None

    with pytest.raises(TypeError, match="its Call names None"):

        @routes.op("GET", "/y", summary="y", query=Paging)
        async def listing(call: Call[None, None]) -> None:
            return None


def test_a_union_accepts_each_of_its_members() -> None:
    routes = Routes(tag="test")

    @routes.op("POST", "/x", summary="x", body=Booking)
    async def either(call: Call[Booking | Other, None]) -> None:
        return None

    @routes.op("POST", "/y", summary="y", body=Other)
    async def either_too(call: Call[Booking | Other, None]) -> None:
        return None

    with pytest.raises(TypeError, match=re.escape("its Call names Booking | Other")):

        @routes.op("POST", "/z", summary="z", body=Paging)
        async def neither(call: Call[Booking | Other, None]) -> None:
            return None
