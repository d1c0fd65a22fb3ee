"""Device binding (pure parts): customer from ancestors, message ids win, the TTL cache."""

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from consumer.pipeline.binding import (
    UNBOUND,
    Binding,
    BindingCache,
    bind,
    bind_in_place,
    customer_of,
    unbound_sns,
)
from tests.records import make_record


def test_customer_is_the_first_non_zero_ancestor_else_the_org() -> None:
    assert customer_of(55, "0,7,31") == 7
    assert customer_of(55, "0") == 55
    assert customer_of(55, "") == 55
    assert customer_of(55, None) == 55
    assert customer_of(55, " 0 , 12 ,3") == 12


def test_message_values_win_field_by_field() -> None:
    record = make_record(customer_id=None, org_id=9, user_id=None)
    bound = bind(record, Binding(7, 31, 400))
    assert (bound.customer_id, bound.org_id, bound.user_id) == (7, 9, 400)
    full = make_record(customer_id=1, org_id=2, user_id=3)
    assert bind(full, Binding(7, 31, 400)) is full


def test_unbound_device_gets_customer_zero() -> None:
    record = make_record(customer_id=None, org_id=None, user_id=None)
    bound = bind(record, UNBOUND)
    assert (bound.customer_id, bound.org_id, bound.user_id) == (0, None, None)


def test_cache_hits_misses_and_ttls() -> None:
    now = [0.0]
    cache = BindingCache(ttl_s=100, negative_ttl_s=10, clock=lambda: now[0])
    assert cache.get_many(["A", "B"]) == ({}, ["A", "B"])
    cache.put_many({"A": Binding(1, 2, 3), "B": UNBOUND})
    assert cache.get_many(["A", "B"]) == ({"A": Binding(1, 2, 3), "B": UNBOUND}, [])
    now[0] = 11.0  # the negative entry expired, the positive one did not
    assert cache.get_many(["A", "B"]) == ({"A": Binding(1, 2, 3)}, ["B"])
    now[0] = 101.0
    assert cache.get_many(["A"]) == ({}, ["A"])


@given(
    ids=st.tuples(*[st.none() | st.integers(1, 10**12)] * 3),
    binding=st.sampled_from([UNBOUND, Binding(7, 31, 400), Binding(7, None, None)]),
    known=st.booleans(),
)
def test_binding_in_place_matches_the_copying_reference(
    ids: tuple[int | None, int | None, int | None], binding: Binding, known: bool
) -> None:
    customer, org, user = ids
    record = make_record("SN-B", customer_id=customer, org_id=org, user_id=user)
    expected = bind(record, binding) if known else record
    expected_ids = (expected.customer_id, expected.org_id, expected.user_id)
    bind_in_place([record], {"SN-B": binding} if known else {"OTHER": binding})
    assert (record.customer_id, record.org_id, record.user_id) == expected_ids
    assert record == dataclasses.replace(expected)


def test_only_records_missing_an_id_are_looked_up() -> None:
    full = make_record("FULL", customer_id=1, org_id=2, user_id=3)
    partial = make_record("PART", customer_id=1, org_id=None, user_id=3)
    bare = make_record("BARE", customer_id=None, org_id=None, user_id=None)
    assert unbound_sns([full, partial, bare, bare]) == {"PART", "BARE"}
