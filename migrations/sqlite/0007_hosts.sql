-- Hosts using this database, each with a lease it renews by heartbeat. On
-- SQLite there is one scheduling host at a time; the row shows it in the
-- status like the hosts sharing a Postgres database.
CREATE TABLE hosts (
    node              TEXT PRIMARY KEY,
    version           TEXT NOT NULL,
    started_at        TEXT NOT NULL,
    heartbeat_at      TEXT NOT NULL,
    lease_expires_at  TEXT NOT NULL
);
