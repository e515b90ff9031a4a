"""Scopes, grants and principals (collector/access.py) on their own."""

from __future__ import annotations

import pytest

from collector.access import EVERYTHING, Grant, Principal, Scope, ScopeConfig, first_grant

EMEA = Scope.of(ScopeConfig(rtc=["emea"]))
SITES = {"ams": frozenset({"emea"}), "bkk": frozenset({"apac"}), "lis": frozenset({"emea", "amer"})}


def test_a_scope_reaches_its_rtcs_and_its_sites() -> None:
    scope = Scope.of(ScopeConfig(rtc=["emea"], site=["bkk"]))
    assert scope.covers("emea", "ams") and scope.covers("apac", "bkk")
    assert not scope.covers("apac", "sin")
    assert EVERYTHING.covers("any", "where") and Scope.of(None) is EVERYTHING
    assert Scope.from_dict(scope.as_dict()) == scope
    assert Scope.from_dict(None) is EVERYTHING and EVERYTHING.as_dict() is None


def test_a_site_of_two_rtcs_is_covered_by_rtc_only_with_both() -> None:
    """A site that agents of two RTCs report (moving, or shared) is not an EMEA admin's
    to grant over: its other RTC's people work there too."""
    assert EMEA.covers_site("ams", SITES)
    assert not EMEA.covers_site("lis", SITES)
    assert not EMEA.covers_site("nowhere", SITES), "a site no agent reports: no RTC known"
    assert Scope.of(ScopeConfig(rtc=["emea", "amer"])).covers_site("lis", SITES)
    assert Scope.of(ScopeConfig(site=["lis"])).covers_site("lis", SITES)
    lis = Scope.of(ScopeConfig(site=["lis"]))
    assert not lis.within(EMEA, SITES)
    assert Scope.of(ScopeConfig(site=["ams"])).within(EMEA, SITES)
    assert EMEA.within(EVERYTHING, SITES) and not EVERYTHING.within(EMEA, SITES)
    assert not Scope.of(ScopeConfig(rtc=["emea", "apac"])).within(EMEA, SITES)


def test_the_first_grant_held_decides() -> None:
    grants = [
        Grant("noc-admins", "admin"),
        Grant("noc-emea", "operator", ScopeConfig(rtc=["emea"])),
        Grant("noc-all", "viewer"),
    ]
    assert first_grant(grants, ["NOC-EMEA", "noc-all"]) is grants[1]
    assert first_grant(grants, ["noc-all", "noc-admins"]) is grants[0]
    assert first_grant(grants, ["other"]) is None
    held = first_grant(grants, ["noc-emea"])
    assert held is not None
    ana = Principal.granted("ana", held, "ldap", "uid=ana,dc=enoc,dc=test")
    assert ana.identity == "ldap:uid=ana,dc=enoc,dc=test"
    assert ana.may("operator") and not ana.may("admin")
    assert Principal.from_dict(ana.as_dict()) == ana


@pytest.mark.parametrize(
    "raw",
    [{"role": "king"}, {"name": "a", "role": "admin", "source": "kerberos", "subject": "a"}],
)
def test_a_stored_principal_that_does_not_read_is_refused(raw: dict[str, str]) -> None:
    with pytest.raises((ValueError, KeyError)):
        Principal.from_dict(raw)


def test_a_scope_names_something() -> None:
    with pytest.raises(ValueError, match="at least one rtc or site"):
        ScopeConfig()
    with pytest.raises(ValueError, match="non-empty names"):
        ScopeConfig(rtc=[" "])
