"""testbed: what tests, `enoc demo` and `enoc bench` run enoc against, outside the runtime.

Real servers on ephemeral loopback ports (Mosquitto, InfluxDB, VictoriaMetrics, PostgreSQL,
Alertmanager, net-snmp's snmpd and snmptrapd) and the fault drills that break them on
purpose. It is test support shipped beside the product so an installed checkout can run
the demo and the benchmarks; agent/, collector/, simulators/ and the enoc core never
import it (import-linter's layers in pyproject.toml).
"""
