"""Object identifiers of the standard MIBs that both ends speak: what the agent polls and
receives as traps, and what the simulator serves and sends (SNMPv2-MIB, IF-MIB,
HOST-RESOURCES-MIB, BGP4-MIB, ENTITY-MIB, ENTITY-SENSOR-MIB)."""

from __future__ import annotations

# SNMPv2-MIB: the system group, the trap varbinds and the generic traps (RFC 3418).
SYSTEM = (1, 3, 6, 1, 2, 1, 1)
SYS_UPTIME_0 = (1, 3, 6, 1, 2, 1, 1, 3, 0)
SNMP_TRAP_OID_0 = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)
COLD_START = (1, 3, 6, 1, 6, 3, 1, 1, 5, 1)
WARM_START = (1, 3, 6, 1, 6, 3, 1, 1, 5, 2)
LINK_DOWN = (1, 3, 6, 1, 6, 3, 1, 1, 5, 3)
LINK_UP = (1, 3, 6, 1, 6, 3, 1, 1, 5, 4)
AUTHENTICATION_FAILURE = (1, 3, 6, 1, 6, 3, 1, 1, 5, 5)
EGP_NEIGHBOR_LOSS = (1, 3, 6, 1, 6, 3, 1, 1, 5, 6)
# The standard traps an SNMPv1 generic-trap 0-5 is (RFC 3584 section 3.1 (3)).
GENERIC_TRAPS = (
    COLD_START,
    WARM_START,
    LINK_DOWN,
    LINK_UP,
    AUTHENTICATION_FAILURE,
    EGP_NEIGHBOR_LOSS,
)
ENTERPRISE_SPECIFIC = 6  # generic-trap enterpriseSpecific(6): the trap is enterprise.0.specific
# What a v1 trap's agent-addr and enterprise become among a notification's varbinds
# (SNMP-COMMUNITY-MIB snmpTrapAddress.0, SNMPv2-MIB snmpTrapEnterprise.0; RFC 3584 3.1 (4)).
SNMP_TRAP_ADDRESS_0 = (1, 3, 6, 1, 6, 3, 18, 1, 3, 0)
SNMP_TRAP_ENTERPRISE_0 = (1, 3, 6, 1, 6, 3, 1, 1, 4, 3, 0)

# IF-MIB (RFC 2863): the tables, and the columns a linkDown or linkUp trap carries.
IF_NUMBER = (1, 3, 6, 1, 2, 1, 2, 1, 0)
IF_ENTRY = (1, 3, 6, 1, 2, 1, 2, 2, 1)
IFX_ENTRY = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
IF_INDEX = (*IF_ENTRY, 1)
IF_ADMIN_STATUS = (*IF_ENTRY, 7)
IF_OPER_STATUS = (*IF_ENTRY, 8)

# HOST-RESOURCES-MIB (RFC 2790).
HR_MEMORY_SIZE = (1, 3, 6, 1, 2, 1, 25, 2, 2, 0)
HR_STORAGE_RAM = (1, 3, 6, 1, 2, 1, 25, 2, 1, 2)
HR_STORAGE_FLASH = (1, 3, 6, 1, 2, 1, 25, 2, 1, 9)
HR_STORAGE_ENTRY = (1, 3, 6, 1, 2, 1, 25, 2, 3, 1)
HR_PROCESSOR_ENTRY = (1, 3, 6, 1, 2, 1, 25, 3, 3, 1)

# BGP4-MIB (RFC 4273): the peer table, the columns its traps carry, and the traps.
BGP = (1, 3, 6, 1, 2, 1, 15)
BGP_PEER_ENTRY = (*BGP, 3, 1)
BGP_PEER_STATE = (*BGP_PEER_ENTRY, 2)
BGP_PEER_REMOTE_ADDR = (*BGP_PEER_ENTRY, 7)
BGP_PEER_LAST_ERROR = (*BGP_PEER_ENTRY, 14)
BGP_ESTABLISHED = (*BGP, 0, 1)
BGP_BACKWARD_TRANSITION = (*BGP, 0, 2)

# ENTITY-MIB (RFC 6933): the physical table's names and classes; ENTITY-SENSOR-MIB
# (RFC 3433): one sensor per physical entity, indexed by entPhysicalIndex.
ENT_PHYSICAL_ENTRY = (1, 3, 6, 1, 2, 1, 47, 1, 1, 1, 1)
ENT_PHYSICAL_DESCR = (*ENT_PHYSICAL_ENTRY, 2)
ENT_PHYSICAL_CLASS = (*ENT_PHYSICAL_ENTRY, 5)
ENT_PHYSICAL_NAME = (*ENT_PHYSICAL_ENTRY, 7)
ENT_PHY_SENSOR_ENTRY = (1, 3, 6, 1, 2, 1, 99, 1, 1, 1)
