"""What a scoped caller may see and open of maintenance windows, and of the event stream.

A window reaches the incidents its `site`, `device` and `match` (a glob on
"site/device/resource/kind") select. It is *inside* a scope when what it reaches
is provably there: its site is in the scope, or (without a site) its `match`
starts with a literal site of the scope. A device alone may match a device of
that name at any site, today's or tomorrow's: an operator's device-only window
is pinned to the device's one known site (`pin`) before it is judged. A window
*touches* a scope when it may reach something inside it: those are the windows a
scoped caller lists.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from collector.access import Scope, SiteRtcs
from collector.incidents import MaintenanceWindow
from collector.stream import StreamEvent

GLOB = frozenset("*?[")


def _site_part(match: str) -> str:
    return match.split("/", 1)[0]


def inside(window: MaintenanceWindow, scope: Scope, rtc_of: SiteRtcs) -> bool:
    """Whether everything `window` can reach is inside `scope` (`rtc_of`: each site's RTCs)."""
    if scope.everything:
        return True
    if window.site:
        return scope.covers_site(window.site, rtc_of)
    part = _site_part(window.match) if window.match else ""
    return bool(part) and not GLOB & set(part) and scope.covers_site(part, rtc_of)


def touches(
    window: MaintenanceWindow,
    scope: Scope,
    rtc_of: SiteRtcs,
    devices: Iterable[tuple[str, str]],
) -> bool:
    """Whether `window` may reach something inside `scope`: a site of it, a device of it
    (`devices`: the known (site, device) pairs), or a glob that matches one of them."""
    if scope.everything or inside(window, scope, rtc_of):
        return True
    if window.site:
        return False  # its site is outside
    sites = {s for s in rtc_of if scope.covers_site(s, rtc_of)} | scope.site
    if window.match:
        part = _site_part(window.match)
        if not GLOB & set(part):
            return False  # a literal site outside
        sites = {s for s in sites if fnmatch.fnmatchcase(s, part)}
    if window.device:
        return any(s in sites and d == window.device for s, d in devices)
    return bool(sites)


def pin(window: MaintenanceWindow, devices: Iterable[tuple[str, str]]) -> MaintenanceWindow:
    """A device-only window given the site of its device when one site alone has a device
    of that name (so that it reaches that device only); else as it is."""
    if window.site or not window.device:
        return window
    sites = {s for s, d in devices if d == window.device}
    if len(sites) != 1:
        return window
    return MaintenanceWindow(**{**window.as_dict(), "site": sites.pop()})


def shown(event: StreamEvent, scope: Scope) -> bool:
    """Whether a stream of a caller of `scope` carries `event`."""
    place = event.place
    return scope.everything or place is None or scope.covers(*place)
