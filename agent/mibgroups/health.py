"""CPU and memory from vendor MIBs, normalised to percent (docs/agent.md says which
average each MIB gives).

Each group reads one MIB's own figures; what it cannot take honestly it leaves out, so
that the next group in precedence order (and HOST-RESOURCES-MIB, last) may give it. A
percentage outside 0..100 is a device's garbage and is not taken; a memory figure needs
a positive total. Where a MIB has a row per CPU, board or pool, the rows are averaged
(percentages) or summed before dividing (bytes), as each group says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from enoc.snmp.ber import Oid
from enoc.wire import Value

from . import Column, Derived, MibGroup, Reading, integer

# ------------------------------------------------------------------ OIDs
# Looked up in the MIB texts (librenms/librenms mibs/...); the comment names the object.

CPM_CPU_TOTAL_ENTRY = (1, 3, 6, 1, 4, 1, 9, 9, 109, 1, 1, 1, 1)  # cpmCPUTotalEntry
CEMP_MEM_POOL_ENTRY = (1, 3, 6, 1, 4, 1, 9, 9, 221, 1, 1, 1, 1)  # cempMemPoolEntry
CISCO_MEMORY_POOL_ENTRY = (1, 3, 6, 1, 4, 1, 9, 9, 48, 1, 1, 1)  # ciscoMemoryPoolEntry
JNX_OPERATING_ENTRY = (1, 3, 6, 1, 4, 1, 2636, 3, 1, 13, 1)  # jnxOperatingEntry
FG_SYSTEM_INFO = (1, 3, 6, 1, 4, 1, 12356, 101, 4, 1)  # fgSystemInfo
HW_ENTITY_STATE_ENTRY = (1, 3, 6, 1, 4, 1, 2011, 5, 25, 31, 1, 1, 1, 1)  # hwEntityStateEntry
HH3C_ENTITY_EXT_STATE_ENTRY = (1, 3, 6, 1, 4, 1, 25506, 2, 6, 1, 1, 1, 1)
SGI_GEN_INFO = (1, 3, 6, 1, 4, 1, 6527, 3, 1, 2, 1, 1)  # TIMETRA-SYSTEM-MIB sysGenInfo
# ALCATEL-IND1-HEALTH-MIB: AOS 6 (softentIND1Health under 6486.800) has device scalars,
# AOS 7 and later (under 6486.801) a table of modules only.
AOS6_HEALTH_DEVICE_INFO = (1, 3, 6, 1, 4, 1, 6486, 800, 1, 2, 1, 16, 1, 1, 1)
AOS7_HEALTH_MODULE_ENTRY = (1, 3, 6, 1, 4, 1, 6486, 801, 1, 2, 1, 16, 1, 1, 1, 1, 1)
UCD_MEMORY = (1, 3, 6, 1, 4, 1, 2021, 4)  # memory
UCD_SYSTEM_STATS = (1, 3, 6, 1, 4, 1, 2021, 11)  # systemStats

CEMP_PROCESSOR_MEMORY = 2  # CempMemPoolTypes processorMemory(2)
CISCO_PROCESSOR_POOL = (1,)  # CiscoMemoryPoolTypes 1: processor memory
TRUTH_FALSE = 2  # TruthValue false(2): the row's figures are not accurate


# ------------------------------------------------------------------ helpers


def numbers(column: Column | None) -> dict[Oid, int]:
    """A column's integer cells by index (noSuchInstance and strings left out)."""
    if not column:
        return {}
    return {index: value for index, (_tag, value) in column.items() if type(value) is int}


def percent(value: float | None) -> float | None:
    """A percentage, or None when it cannot be one."""
    if value is None or not 0 <= value <= 100:
        return None
    return round(float(value), 2)


def mean(values: Iterable[float]) -> float | None:
    """The mean of the values that are percentages; None when none is."""
    taken = [v for v in (percent(x) for x in values) if v is not None]
    return round(sum(taken) / len(taken), 2) if taken else None


def share(used: float, total: float) -> float | None:
    """used / total in percent; None without a positive total."""
    return percent(100 * used / total) if total > 0 and used >= 0 else None


def first_column(reading: Reading, names: Sequence[str]) -> dict[Oid, int]:
    """The first of `names` (most wanted first) that has any cell within 0..100."""
    for name in names:
        cells = numbers(reading.tables.get(name))
        if any(percent(v) is not None for v in cells.values()):
            return cells
    return {}


def fields(cpu: float | None = None, memory: float | None = None) -> Derived:
    out: dict[str, Value] = {}
    if cpu is not None:
        out["cpu"] = cpu
    if memory is not None:
        out["memory"] = memory
    return Derived(fields=out)


def hc_or_32(reading: Reading, hc: str, low: str) -> dict[Oid, int]:
    """A 64-bit column where the device has it, else its 32-bit twin, per row."""
    out = numbers(reading.tables.get(low))
    out.update(numbers(reading.tables.get(hc)))
    return out


# ------------------------------------------------------------------ Cisco

CPM_CPU_COLUMNS = {  # most wanted first: the Rev objects replace the deprecated (1..100) ones
    name: (*CPM_CPU_TOTAL_ENTRY, arc)
    for name, arc in (
        ("cpmCPUTotal5minRev", 8),
        ("cpmCPUTotal1minRev", 7),
        ("cpmCPUTotal5secRev", 6),
        ("cpmCPUTotal5min", 5),
        ("cpmCPUTotal1min", 4),
        ("cpmCPUTotal5sec", 3),
    )
}


def cisco_cpu(reading: Reading) -> Derived:
    """The mean over CPUs (rows) of the longest average the device gives."""
    return fields(cpu=mean(first_column(reading, list(CPM_CPU_COLUMNS)).values()))


def cisco_process_memory(reading: Reading) -> Derived:
    """System memory of each CPU (kilobytes used and free, HC where given), summed."""
    used = hc_or_32(reading, "cpmCPUMemoryHCUsed", "cpmCPUMemoryUsed")
    free = hc_or_32(reading, "cpmCPUMemoryHCFree", "cpmCPUMemoryFree")
    rows = used.keys() & free.keys()
    in_use = sum(used[i] for i in rows)
    return fields(memory=share(in_use, in_use + sum(free[i] for i in rows)))


def cisco_enhanced_mempool(reading: Reading) -> Derived:
    """Processor pools of every entity (bytes used and free, HC where given), summed."""
    kinds = numbers(reading.tables.get("cempMemPoolType"))
    valid = numbers(reading.tables.get("cempMemPoolValid"))
    used = hc_or_32(reading, "cempMemPoolHCUsed", "cempMemPoolUsed")
    free = hc_or_32(reading, "cempMemPoolHCFree", "cempMemPoolFree")
    rows = [
        i
        for i, kind in kinds.items()
        if kind == CEMP_PROCESSOR_MEMORY and valid.get(i) != TRUTH_FALSE and i in used and i in free
    ]
    in_use = sum(used[i] for i in rows)
    return fields(memory=share(in_use, in_use + sum(free[i] for i in rows)))


def cisco_memory_pool(reading: Reading) -> Derived:
    """The processor pool (bytes used and free)."""
    valid = numbers(reading.tables.get("ciscoMemoryPoolValid")).get(CISCO_PROCESSOR_POOL)
    used = numbers(reading.tables.get("ciscoMemoryPoolUsed")).get(CISCO_PROCESSOR_POOL)
    free = numbers(reading.tables.get("ciscoMemoryPoolFree")).get(CISCO_PROCESSOR_POOL)
    if valid == TRUTH_FALSE or used is None or free is None:
        return Derived()
    return fields(memory=share(used, used + free))


# ------------------------------------------------------------------ Juniper


def juniper(reading: Reading) -> Derived:
    """The Routing Engines' rows (by jnxOperatingDescr), averaged: CPU and buffer (memory)
    utilisation. Other rows (FPCs, PICs, fans) are not the device's control plane."""
    descr = reading.tables.get("jnxOperatingDescr", {})
    engines = {
        i
        for i, (_tag, name) in descr.items()
        if isinstance(name, bytes) and b"routing engine" in name.lower()
    }
    cpu = numbers(reading.tables.get("jnxOperatingCPU"))
    buffer = numbers(reading.tables.get("jnxOperatingBuffer"))
    return fields(
        cpu=mean(v for i, v in cpu.items() if i in engines),
        memory=mean(v for i, v in buffer.items() if i in engines),
    )


# ------------------------------------------------------------------ one figure per device


def fortigate(reading: Reading) -> Derived:
    return fields(
        cpu=percent(integer(reading, "fgSysCpuUsage")),
        memory=percent(integer(reading, "fgSysMemUsage")),
    )


def nonzero_mean(column: Column | None) -> float | None:
    """The mean of the rows that report: these MIBs give 0 for an entity with no CPU or
    memory of its own (a port, a fan), so a 0 row is not one."""
    return mean(v for v in numbers(column).values() if v != 0)


def huawei(reading: Reading) -> Derived:
    return fields(
        cpu=nonzero_mean(reading.tables.get("hwEntityCpuUsage")),
        memory=nonzero_mean(reading.tables.get("hwEntityMemUsage")),
    )


def hh3c(reading: Reading) -> Derived:
    return fields(
        cpu=nonzero_mean(reading.tables.get("hh3cEntityExtCpuUsage")),
        memory=nonzero_mean(reading.tables.get("hh3cEntityExtMemUsage")),
    )


def timetra(reading: Reading) -> Derived:
    """Memory: pool memory in use of what the pools hold plus what they may still grow
    into (kilobytes)."""
    used = integer(reading, "sgiKbMemoryUsed")
    pools = integer(reading, "sgiKbMemoryPoolAllocated")
    available = integer(reading, "sgiKbMemoryAvailable")
    memory = None
    if used is not None and pools is not None and available is not None:
        memory = share(used, pools + available)
    return fields(cpu=percent(integer(reading, "sgiCpuUsage")), memory=memory)


def first_of(reading: Reading, names: Sequence[str]) -> float | None:
    for name in names:
        value = percent(integer(reading, name))
        if value is not None:
            return value
    return None


def aos6(reading: Reading) -> Derived:
    return fields(
        cpu=first_of(reading, ("healthDeviceCpu1MinAvg", "healthDeviceCpuLatest")),
        memory=first_of(reading, ("healthDeviceMemory1MinAvg", "healthDeviceMemoryLatest")),
    )


def aos7(reading: Reading) -> Derived:
    """The mean over modules (chassis of a virtual chassis, line cards)."""
    cpu = first_column(reading, ("healthModuleCpu1MinAvg", "healthModuleCpuLatest"))
    memory = first_column(reading, ("healthModuleMemory1MinAvg", "healthModuleMemoryLatest"))
    return fields(cpu=mean(cpu.values()), memory=mean(memory.values()))


# ------------------------------------------------------------------ UCD-SNMP (net-snmp)


def ucd_cpu(reading: Reading) -> Derived:
    """100 - ssCpuIdle: net-snmp's busy share over the last minute."""
    idle = percent(integer(reading, "ssCpuIdle"))
    return fields(cpu=None if idle is None else round(100 - idle, 2))


def ucd_memory(reading: Reading) -> Derived:
    """Real memory in use as Linux counts it: total less available, buffers and cache
    (kilobytes); buffers and cache count as free where the host does not give them."""
    total = integer(reading, "memTotalReal")
    available = integer(reading, "memAvailReal")
    if total is None or available is None:
        return Derived()
    used = total - available - (integer(reading, "memBuffer") or 0)
    used -= integer(reading, "memCached") or 0
    return fields(memory=share(used, total))


def under(base: Oid, arcs: dict[str, int], instance: tuple[int, ...] = ()) -> dict[str, Oid]:
    """Objects by name from their arc under `base` (a table entry's columns, or scalars
    with `instance` (0,))."""
    return {name: (*base, arc, *instance) for name, arc in arcs.items()}


def table(
    name: str, mib: str, entry: Oid, arcs: dict[str, int], derive: Callable[[Reading], Derived]
) -> MibGroup:
    """A group of columns, probed at its first column (a GETNEXT there lands in it)."""
    columns = under(entry, arcs)
    return MibGroup(name, mib, next(iter(columns.values())), columns=columns, derive=derive)


def scalars(
    name: str, mib: str, base: Oid, arcs: dict[str, int], derive: Callable[[Reading], Derived]
) -> MibGroup:
    """A group of scalars under one node, probed at the node."""
    return MibGroup(name, mib, base, scalars=under(base, arcs, (0,)), derive=derive)


# In precedence order: where two give cpu or memory, the first one's is taken.
GROUPS: tuple[MibGroup, ...] = (
    MibGroup(
        "cisco_process",
        "CISCO-PROCESS-MIB",
        probe=CPM_CPU_TOTAL_ENTRY,  # any column: the 5-second one alone is enough
        columns=CPM_CPU_COLUMNS,
        derive=cisco_cpu,
    ),
    table(
        "cisco_enhanced_mempool",
        "CISCO-ENHANCED-MEMPOOL-MIB",
        CEMP_MEM_POOL_ENTRY,
        {
            "cempMemPoolType": 2,
            "cempMemPoolValid": 6,
            "cempMemPoolUsed": 7,
            "cempMemPoolFree": 8,
            "cempMemPoolHCUsed": 18,
            "cempMemPoolHCFree": 20,
        },
        cisco_enhanced_mempool,
    ),
    table(
        "cisco_memory_pool",
        "CISCO-MEMORY-POOL-MIB",
        CISCO_MEMORY_POOL_ENTRY,
        {"ciscoMemoryPoolValid": 4, "ciscoMemoryPoolUsed": 5, "ciscoMemoryPoolFree": 6},
        cisco_memory_pool,
    ),
    table(
        "cisco_process_memory",
        "CISCO-PROCESS-MIB",
        CPM_CPU_TOTAL_ENTRY,
        {
            "cpmCPUMemoryUsed": 12,
            "cpmCPUMemoryFree": 13,
            "cpmCPUMemoryHCUsed": 17,
            "cpmCPUMemoryHCFree": 19,
        },
        cisco_process_memory,
    ),
    MibGroup(
        "juniper_operating",
        "JUNIPER-MIB",
        probe=(*JNX_OPERATING_ENTRY, 8),  # jnxOperatingCPU
        columns=under(
            JNX_OPERATING_ENTRY,
            {"jnxOperatingDescr": 5, "jnxOperatingCPU": 8, "jnxOperatingBuffer": 11},
        ),
        derive=juniper,
    ),
    scalars(
        "fortigate_system",
        "FORTINET-FORTIGATE-MIB",
        FG_SYSTEM_INFO,
        {"fgSysCpuUsage": 3, "fgSysMemUsage": 4},
        fortigate,
    ),
    table(
        "huawei_entity",
        "HUAWEI-ENTITY-EXTENT-MIB",
        HW_ENTITY_STATE_ENTRY,
        {"hwEntityCpuUsage": 5, "hwEntityMemUsage": 7},
        huawei,
    ),
    table(
        "hh3c_entity",
        "HH3C-ENTITY-EXT-MIB",
        HH3C_ENTITY_EXT_STATE_ENTRY,
        {"hh3cEntityExtCpuUsage": 6, "hh3cEntityExtMemUsage": 8},
        hh3c,
    ),
    scalars(
        "timetra_system",
        "TIMETRA-SYSTEM-MIB",
        SGI_GEN_INFO,
        {
            "sgiCpuUsage": 1,
            "sgiKbMemoryUsed": 9,
            "sgiKbMemoryAvailable": 10,
            "sgiKbMemoryPoolAllocated": 11,
        },
        timetra,
    ),
    scalars(
        "alcatel_aos6_health",
        "ALCATEL-IND1-HEALTH-MIB",
        AOS6_HEALTH_DEVICE_INFO,
        {
            "healthDeviceMemoryLatest": 9,
            "healthDeviceMemory1MinAvg": 10,
            "healthDeviceCpuLatest": 13,
            "healthDeviceCpu1MinAvg": 14,
        },
        aos6,
    ),
    MibGroup(
        "alcatel_aos7_health",
        "ALCATEL-IND1-HEALTH-MIB",
        probe=AOS7_HEALTH_MODULE_ENTRY,
        columns=under(
            AOS7_HEALTH_MODULE_ENTRY,
            {
                "healthModuleMemory1MinAvg": 8,
                "healthModuleCpu1MinAvg": 11,
                "healthModuleCpuLatest": 15,
                "healthModuleMemoryLatest": 16,
            },
        ),
        derive=aos7,
    ),
    scalars("ucd_cpu", "UCD-SNMP-MIB", UCD_SYSTEM_STATS, {"ssCpuIdle": 11}, ucd_cpu),
    scalars(
        "ucd_memory",
        "UCD-SNMP-MIB",
        UCD_MEMORY,
        {"memTotalReal": 5, "memAvailReal": 6, "memBuffer": 14, "memCached": 15},
        ucd_memory,
    ),
)
