"""The incident store's schema, as the migrations that build it.

`MIGRATIONS[i]` brings version i to i + 1; `Store.open` applies the missing ones
in one transaction. `{serial}` is each dialect's auto-increment primary key;
`{{}}` a literal `{}`.
"""

from __future__ import annotations

# An event's columns after its key, the same in the first events table and in version 6's,
# which only re-keys it.
_EVENT_COLUMNS = """
            device TEXT NOT NULL,
            resource TEXT NOT NULL,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            severity TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            received DOUBLE PRECISION NOT NULL,
            message TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT 'poll',
            attrs TEXT NOT NULL DEFAULT '{{}}',"""

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE incidents (
            id {serial},
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            resource TEXT NOT NULL,
            kind TEXT NOT NULL,
            rtc TEXT NOT NULL DEFAULT '',
            severity TEXT NOT NULL,
            state TEXT NOT NULL,
            title TEXT NOT NULL,
            opened DOUBLE PRECISION NOT NULL,
            updated DOUBLE PRECISION NOT NULL,
            acknowledged DOUBLE PRECISION,
            acknowledged_by TEXT NOT NULL DEFAULT '',
            resolved DOUBLE PRECISION,
            resolved_by TEXT NOT NULL DEFAULT '',
            count INTEGER NOT NULL DEFAULT 1,
            flapping INTEGER NOT NULL DEFAULT 0,
            suppressed_by BIGINT,
            maintenance INTEGER NOT NULL DEFAULT 0,
            escalated INTEGER NOT NULL DEFAULT 0,
            transitions TEXT NOT NULL DEFAULT '[]',
            attrs TEXT NOT NULL DEFAULT '{{}}'
        )""",
        """CREATE UNIQUE INDEX incidents_one_open_per_key
            ON incidents (site, device, resource, kind) WHERE state <> 'resolved'""",
        "CREATE INDEX incidents_by_key ON incidents (site, device, resource, kind, id)",
        "CREATE INDEX incidents_by_state ON incidents (state, site)",
        "CREATE INDEX incidents_by_opened ON incidents (opened)",
        """CREATE TABLE timeline (
            id {serial},
            incident_id BIGINT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            what TEXT NOT NULL,
            actor TEXT NOT NULL DEFAULT '',
            text TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL DEFAULT '',
            event_id TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX timeline_by_incident ON timeline (incident_id, id)",
        """CREATE TABLE events (
            agent TEXT NOT NULL,
            event_id TEXT NOT NULL,
            site TEXT NOT NULL,"""
        + _EVENT_COLUMNS
        + """
            PRIMARY KEY (agent, event_id)
        )""",
        "CREATE INDEX events_by_received ON events (received)",
        """CREATE TABLE agents (
            agent TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            rtc TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL,
            last_seen DOUBLE PRECISION NOT NULL,
            version TEXT NOT NULL DEFAULT '',
            inventory_size INTEGER NOT NULL DEFAULT 0,
            health TEXT NOT NULL DEFAULT '{{}}'
        )""",
        """CREATE TABLE devices (
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            agent TEXT NOT NULL DEFAULT '',
            rtc TEXT NOT NULL DEFAULT '',
            address TEXT NOT NULL DEFAULT '',
            role TEXT NOT NULL DEFAULT '',
            parent TEXT NOT NULL DEFAULT '',
            reach TEXT NOT NULL DEFAULT 'up',
            updated DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (site, device)
        )""",
        """CREATE TABLE maintenance (
            id {serial},
            site TEXT NOT NULL DEFAULT '',
            device TEXT NOT NULL DEFAULT '',
            match TEXT NOT NULL DEFAULT '',
            starts DOUBLE PRECISION NOT NULL,
            ends DOUBLE PRECISION NOT NULL,
            every DOUBLE PRECISION NOT NULL DEFAULT 0,
            until DOUBLE PRECISION,
            reason TEXT NOT NULL DEFAULT '',
            created_by TEXT NOT NULL DEFAULT '',
            created DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE audit (
            id {serial},
            at DOUBLE PRECISION NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT ''
        )""",
    ],
    # 1 -> 2: the seq of the last status applied per agent, so that a late, older status
    # (an earlier connection's will redelivered after a broker restart) is recognised.
    ["ALTER TABLE agents ADD COLUMN status_seq BIGINT NOT NULL DEFAULT 0"],
    # 2 -> 3: replicas act as one collector. `changes`: every incident change and live
    # status, in commit order (the stream's event ids, the notifiers' input), pruned after
    # store.changes_retention. `notify_cursors`: per webhook, the last change decided, and
    # which replica holds the delivery lease. `notify_told`: the incidents a webhook was
    # told are open (so that their resolution follows, after any restart, on any replica).
    [
        """CREATE TABLE changes (
            id {serial},
            at DOUBLE PRECISION NOT NULL,
            kind TEXT NOT NULL,
            change TEXT NOT NULL DEFAULT '',
            incident_id BIGINT,
            origin TEXT NOT NULL DEFAULT '',
            data TEXT NOT NULL
        )""",
        "CREATE INDEX changes_by_at ON changes (at)",
        """CREATE TABLE notify_cursors (
            webhook TEXT PRIMARY KEY,
            last_id BIGINT NOT NULL,
            owner TEXT NOT NULL DEFAULT '',
            lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
            updated DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE notify_told (
            webhook TEXT NOT NULL,
            incident_id BIGINT NOT NULL,
            PRIMARY KEY (webhook, incident_id)
        )""",
    ],
    # 3 -> 4: incident decisions follow the events' own times, whatever order replicas
    # receive them in: the engine looks up a key's recorded events around an event's `at`.
    # The incidents suppressed under a cause, for when the cause's span turns out shorter.
    [
        "CREATE INDEX events_by_key ON events (site, device, resource, kind, at)",
        "CREATE INDEX incidents_by_cause ON incidents (suppressed_by) "
        "WHERE suppressed_by IS NOT NULL",
    ],
    # 4 -> 5: console sessions logged out and failed logins, so that every replica refuses
    # a logged-out cookie and counts every replica's failures (collector/session.py).
    [
        """CREATE TABLE session_revocations (
            nonce TEXT PRIMARY KEY,
            expires DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX session_revocations_by_expiry ON session_revocations (expires)",
        """CREATE TABLE login_failures (
            key TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX login_failures_by_key ON login_failures (key, at)",
        "CREATE INDEX login_failures_by_at ON login_failures (at)",
    ],
    # 5 -> 6: an agent is known by its site and its id (two sites may each run an
    # "edge-1"): the agents and events tables are keyed by (site, agent), rebuilt as
    # neither dialect alters a primary key in place alike. inventory_size becomes a BIGINT
    # (PostgreSQL's INTEGER is 32 bits; the wire's integers are int64).
    [
        """CREATE TABLE agents_v6 (
            site TEXT NOT NULL,
            agent TEXT NOT NULL,
            rtc TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL,
            last_seen DOUBLE PRECISION NOT NULL,
            version TEXT NOT NULL DEFAULT '',
            inventory_size BIGINT NOT NULL DEFAULT 0,
            health TEXT NOT NULL DEFAULT '{{}}',
            status_seq BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (site, agent)
        )""",
        "INSERT INTO agents_v6 (site, agent, rtc, state, last_seen, version, inventory_size, "
        "health, status_seq) SELECT site, agent, rtc, state, last_seen, version, "
        "inventory_size, health, status_seq FROM agents",
        "DROP TABLE agents",
        "ALTER TABLE agents_v6 RENAME TO agents",
        """CREATE TABLE events_v6 (
            site TEXT NOT NULL,
            agent TEXT NOT NULL,
            event_id TEXT NOT NULL,"""
        + _EVENT_COLUMNS
        + """
            PRIMARY KEY (site, agent, event_id)
        )""",
        "INSERT INTO events_v6 (site, agent, event_id, device, resource, kind, state, severity, "
        "at, received, message, source, attrs) SELECT site, agent, event_id, device, resource, "
        "kind, state, severity, at, received, message, source, attrs FROM events",
        "DROP TABLE events",  # and its indexes, made again below
        "ALTER TABLE events_v6 RENAME TO events",
        "CREATE INDEX events_by_received ON events (received)",
        "CREATE INDEX events_by_key ON events (site, device, resource, kind, at)",
    ],
    # 6 -> 7: follow the sun: the handover summaries sent at shift changes, one row per
    # ending shift, claimed in a transaction so that one replica sends each
    # (collector/handover.py).
    [
        """CREATE TABLE handovers (
            desk TEXT NOT NULL,
            shift_end DOUBLE PRECISION NOT NULL,
            next_desk TEXT NOT NULL,
            owner TEXT NOT NULL DEFAULT '',
            claimed_until DOUBLE PRECISION NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            sent DOUBLE PRECISION NOT NULL DEFAULT 0,
            PRIMARY KEY (desk, shift_end)
        )""",
    ],
    # 7 -> 8: the tickets a service desk (ServiceNow) holds for incidents, one per incident and
    # receiver (collector/notifiers/servicenow.py), and the cursor and lease of the way back
    # (collector/tickets.py): one replica at a time reads the desk's changes.
    [
        """CREATE TABLE incident_tickets (
            incident_id BIGINT NOT NULL,
            target TEXT NOT NULL,
            number TEXT NOT NULL,
            sys_id TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{{}}',
            created DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (incident_id, target)
        )""",
        "CREATE INDEX incident_tickets_by_sys_id ON incident_tickets (target, sys_id)",
        """CREATE TABLE ticket_sync (
            target TEXT PRIMARY KEY,
            cursor TEXT NOT NULL,
            owner TEXT NOT NULL DEFAULT '',
            lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
            updated DOUBLE PRECISION NOT NULL DEFAULT 0
        )""",
    ],
    # 8 -> 9: sessions kept whole in the store (collector/session.py): the principal
    # behind each (role, scope, the identity a directory or single sign-on confirms),
    # read by every replica; they replace the list of logged-out nonces.
    [
        """CREATE TABLE sessions (
            nonce TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            identity TEXT NOT NULL,
            expires DOUBLE PRECISION NOT NULL,
            checked DOUBLE PRECISION NOT NULL,
            claimed DOUBLE PRECISION NOT NULL DEFAULT 0,
            revoked DOUBLE PRECISION NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX sessions_by_identity ON sessions (identity)",
        "CREATE INDEX sessions_by_expiry ON sessions (expires)",
        "DROP TABLE session_revocations",
    ],
    # 9 -> 10: API tokens (collector/tokens.py): the SHA-256 of each secret, never the
    # secret, with the token's role, scope (JSON, 'null' for everything) and expiry
    # (NULL: never); revoked (a time, 0 while valid) holds on every replica.
    [
        """CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            digest TEXT NOT NULL,
            role TEXT NOT NULL,
            scope TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            created_by TEXT NOT NULL DEFAULT '',
            expires DOUBLE PRECISION,
            revoked DOUBLE PRECISION NOT NULL DEFAULT 0,
            revoked_by TEXT NOT NULL DEFAULT '',
            last_used DOUBLE PRECISION NOT NULL DEFAULT 0
        )""",
    ],
    # 10 -> 11: what confirms a single-sign-on identity again (collector/oidc.py): its
    # latest refresh and ID tokens, encrypted under the session key, one row per identity.
    [
        """CREATE TABLE oidc_tokens (
            identity TEXT PRIMARY KEY,
            tokens TEXT NOT NULL,
            updated DOUBLE PRECISION NOT NULL
        )""",
    ],
    # 11 -> 12: on PostgreSQL every writing transaction leaves its client-made token here
    # (collector/store.py), so that a COMMIT whose answer was lost (the primary died or
    # switched over) is looked up rather than run twice; pruned after minutes.
    [
        """CREATE TABLE store_commits (
            token TEXT PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX store_commits_by_at ON store_commits (at)",
    ],
    # 12 -> 13: the replicas partitioning the sites (collector/partition.py): each one's
    # heartbeat, the URL of its API, its MQTT client id (the sessions a survivor drains
    # when it dies) and the membership it has subscribed for.
    [
        """CREATE TABLE replicas (
            id TEXT PRIMARY KEY,
            url TEXT NOT NULL DEFAULT '',
            client_id TEXT NOT NULL DEFAULT '',
            last_seen DOUBLE PRECISION NOT NULL,
            applied TEXT NOT NULL DEFAULT ''
        )""",
    ],
    # 13 -> 14: the identity behind an operator's name (`local:alice`, `token:12`,
    # `ldap:<DN>`) in its timeline entries and on the acknowledgement it made, so that a
    # token or a directory user named like a users-file user can be told apart.
    [
        "ALTER TABLE timeline ADD COLUMN identity TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE incidents ADD COLUMN acknowledged_identity TEXT NOT NULL DEFAULT ''",
    ],
]
