"""The shipped trap rules: what common notifications mean (agent.traprules).

Each raise is paired with the clear its MIB defines, under one `alarm` name and
keyed by what both traps carry (the row they speak of, or a varbind's value), so
that the clear resolves the raise's incident. A raise whose MIB defines no clear
resolves after a time (`resolve_after`). linkDown and linkUp are not here: they
are link events (agent.edge), as a poll sees them. The operator's `traps.rules`
file adds rules and replaces these, notification by notification.
"""

from __future__ import annotations

from agent.traprules import TrapRuleConfig as Rule
from enoc.config import Duration
from enoc.wire import Severity

HOUR = Duration(3600)

# CISCO-ENVMON-MIB's CiscoEnvMonState, for its status-change notifications.
ENVMON_STATES = {
    "normal": "clear",
    "warning": "warning",
    "critical": "critical",
    "shutdown": "critical",
    "notPresent": "minor",
    "notFunctioning": "major",
}
# UPS-MIB's well-known alarms (upsWellKnownAlarms) that are worse than `major`, or none.
UPS_ALARMS = {
    "upsAlarmOnBattery": "critical",
    "upsAlarmLowBattery": "critical",
    "upsAlarmDepletedBattery": "critical",
    "upsAlarmShutdownImminent": "critical",
    "upsAlarmUpsOutputOff": "critical",
    "upsAlarmUpsSystemOff": "critical",
    "upsAlarmTestInProgress": "info",
}


def _juniper(
    raise_: str, clear: str, alarm: str, by: str, severity: Severity = "major"
) -> list[Rule]:
    return [
        Rule(raise_, alarm=alarm, index_of=by, severity=severity),
        Rule(clear, alarm=alarm, index_of=by, clear=True),
    ]


def _pair(raise_: str, clear: str, severity: Severity, alarm: str = "") -> list[Rule]:
    """A PowerNet-MIB trap and the one that clears it (device-wide)."""
    return [
        Rule(f"PowerNet-MIB::{raise_}", alarm=alarm or raise_, severity=severity),
        Rule(f"PowerNet-MIB::{clear}", alarm=alarm or raise_, clear=True),
    ]


SHIPPED_RULES: tuple[Rule, ...] = (
    # ENTITY-STATE-MIB (RFC 4268): an entity's operational state, by entPhysicalIndex
    Rule("entStateOperDisabled", alarm="entStateOper", index_of="entStateAdmin"),
    Rule("entStateOperEnabled", alarm="entStateOper", index_of="entStateAdmin", clear=True),
    # UPS-MIB (RFC 1628): the alarm table's entries, by the alarm's identity
    Rule(
        "upsTrapAlarmEntryAdded",
        alarm="upsAlarm",
        value_of=["upsAlarmDescr"],
        state_of="upsAlarmDescr",
        states=UPS_ALARMS,
    ),
    Rule("upsTrapAlarmEntryRemoved", alarm="upsAlarm", value_of=["upsAlarmDescr"], clear=True),
    # sent each minute while on battery, and never cleared: over when the repeats stop
    Rule("upsTrapOnBattery", severity="critical", resolve_after=Duration(300)),
    # PowerNet-MIB (APC): device-wide traps, each with its cleared counterpart
    *_pair("upsOnBattery", "powerRestored", "critical"),
    *_pair("lowBattery", "returnFromLowBattery", "critical"),
    *_pair("upsTurnedOff", "upsTurnedOn", "critical"),
    *_pair("upsDischarged", "dischargeCleared", "major"),
    *_pair("upsOverload", "upsOverloadCleared", "major"),
    *_pair("badVoltage", "badVoltageCleared", "major"),
    *_pair("chargerFailure", "chargerFailureCleared", "major"),
    *_pair("batteryOverTemperature", "batteryOverTemperatureCleared", "major"),
    *_pair("smartRelayFault", "smartRelayFaultCleared", "major"),
    *_pair("communicationLost", "communicationEstablished", "major"),
    *_pair("batteryPackCommLost", "batteryPackCommEstablished", "minor"),
    *_pair("upsBatteryNeedsReplacement", "upsBatteryReplaced", "minor"),
    *_pair("upsDiagnosticsFailed", "upsDiagnosticsPassed", "minor"),
    # the three ways onto bypass end the same way
    *_pair("switchedBypass", "returnFromBypass", "major", alarm="upsBypass"),
    Rule("PowerNet-MIB::softwareBypass", alarm="upsBypass"),
    Rule("PowerNet-MIB::hardwareFailureBypass", alarm="upsBypass"),
    # a contact (by its number) of an environmental monitor
    Rule("contactFault", alarm="contactFault", value_of=["mtrapargsInteger"]),
    Rule("contactFaultResolved", alarm="contactFault", value_of=["mtrapargsInteger"], clear=True),
    Rule("baseFanFailure", resolve_after=HOUR),
    Rule("bypassPowerSupplyFailure", resolve_after=HOUR),
    # CISCO-ENVMON-MIB: the status changes, raise or clear by the state they carry
    Rule(
        "ciscoEnvMonSuppStatusChangeNotif",
        alarm="ciscoEnvMonSupply",
        index_of="ciscoEnvMonSupplyState",
        state_of="ciscoEnvMonSupplyState",
        states=ENVMON_STATES,
    ),
    Rule(
        "ciscoEnvMonFanStatusChangeNotif",
        alarm="ciscoEnvMonFan",
        index_of="ciscoEnvMonFanState",
        state_of="ciscoEnvMonFanState",
        states=ENVMON_STATES,
    ),
    Rule(
        "ciscoEnvMonTempStatusChangeNotif",
        alarm="ciscoEnvMonTemperature",
        index_of="ciscoEnvMonTemperatureState",
        state_of="ciscoEnvMonTemperatureState",
        states=ENVMON_STATES,
    ),
    Rule(
        "ciscoEnvMonVoltStatusChangeNotif",
        alarm="ciscoEnvMonVoltage",
        index_of="ciscoEnvMonVoltageState",
        state_of="ciscoEnvMonVoltageState",
        states=ENVMON_STATES,
    ),
    # the older ones, sent on a failure only: the same alarms, which a status change ends
    Rule(
        "ciscoEnvMonRedundantSupplyNotification",
        alarm="ciscoEnvMonSupply",
        index_of="ciscoEnvMonSupplyState",
        state_of="ciscoEnvMonSupplyState",
        states=ENVMON_STATES,
        resolve_after=HOUR,
    ),
    Rule(
        "ciscoEnvMonFanNotification",
        alarm="ciscoEnvMonFan",
        index_of="ciscoEnvMonFanState",
        state_of="ciscoEnvMonFanState",
        states=ENVMON_STATES,
        resolve_after=HOUR,
    ),
    Rule(
        "ciscoEnvMonTemperatureNotification",
        alarm="ciscoEnvMonTemperature",
        index_of="ciscoEnvMonTemperatureState",
        state_of="ciscoEnvMonTemperatureState",
        states=ENVMON_STATES,
        resolve_after=HOUR,
    ),
    Rule(
        "ciscoEnvMonVoltageNotification",
        alarm="ciscoEnvMonVoltage",
        index_of="ciscoEnvMonVoltageState",
        state_of="ciscoEnvMonVoltageState",
        states=ENVMON_STATES,
        resolve_after=HOUR,
    ),
    # JUNIPER-MIB chassis traps and their OK traps, by the component's row
    *_juniper("jnxPowerSupplyFailure", "jnxPowerSupplyOK", "jnxPowerSupply", "jnxContentsDescr"),
    *_juniper(
        "jnxPowerSupplyInputFailure",
        "jnxPowerSupplyInputOK",
        "jnxPowerSupplyInput",
        "jnxContentsDescr",
    ),
    *_juniper("jnxFanFailure", "jnxFanOK", "jnxFan", "jnxContentsDescr"),
    *_juniper(
        "jnxOverTemperature", "jnxTemperatureOK", "jnxTemperature", "jnxContentsDescr", "critical"
    ),
    *_juniper("jnxFruFailed", "jnxFruOK", "jnxFru", "jnxFruName"),
    Rule("jnxFruCheck", alarm="jnxFru", index_of="jnxFruName", severity="minor"),
    *_juniper("jnxFruOffline", "jnxFruOnline", "jnxFruOffline", "jnxFruName", "minor"),
    *_juniper("jnxHardDiskFailed", "jnxHardDiskOK", "jnxHardDisk", "jnxFruName"),
    *_juniper("jnxExtSrcLockLost", "jnxExtSrcLockAcquired", "jnxExtSrcLock", "jnxFruName"),
    Rule("jnxRedundancySwitchover", severity="warning", resolve_after=HOUR),
    # FORTINET-FORTIGATE-MIB: the HA cluster
    Rule("fgTrapHaMemberDown", alarm="fgTrapHaMember"),
    Rule("fgTrapHaMemberUp", alarm="fgTrapHaMember", clear=True),
    Rule("fgTrapHaHBFail", severity="critical", resolve_after=HOUR),
    Rule("fgTrapHaSwitch", severity="warning", resolve_after=HOUR),
    Rule("fgTrapHaStateChange", severity="warning", resolve_after=HOUR),
    # FORTINET-CORE-MIB: hardware (no clears), and interfaces in bypass mode
    Rule("fnTrapPowerSupply", resolve_after=HOUR),
    Rule("fnTrapFanFailure", resolve_after=HOUR),
    Rule("fnTrapTempHigh", resolve_after=HOUR),
    Rule("fnTrapVoltageOutOfRange", resolve_after=HOUR),
    Rule("fnTrapIfEnterBypassMode", alarm="fnTrapIfBypassMode", severity="minor"),
    Rule("fnTrapIfExitBypassMode", alarm="fnTrapIfBypassMode", clear=True),
)
