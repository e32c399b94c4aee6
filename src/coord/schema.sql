-- reimage coordination store, schema version 1.
--
-- Plain tables, readable with psql. reimage creates them on first use (or
-- with `reimage setup-db`) inside one transaction under an advisory lock,
-- so several first runs at once do not race.
--
-- A row is a lease: it is valid while `expires` (the database's clock) lies
-- in the future. Its run renews it every quarter lease; a run that dies
-- stops renewing, and the next run that wants the computer or the slot
-- takes the row over once it has expired.

CREATE TABLE IF NOT EXISTS reimage_schema (
    version integer NOT NULL
);

-- One holder per computer across the site.
CREATE TABLE IF NOT EXISTS reimage_holder (
    computer text PRIMARY KEY,
    token    text NOT NULL,           -- random, one per run
    host     text NOT NULL,           -- management node that runs it
    pid      integer NOT NULL,
    command  text NOT NULL,           -- e.g. "provision --image c7"
    started  timestamptz NOT NULL,
    expires  timestamptz NOT NULL
);

-- Load slots: at most `max_concurrent_loads` rows per limit class.
CREATE TABLE IF NOT EXISTS reimage_slot (
    class    text NOT NULL,           -- e.g. xcat-<hash of the xCAT root>
    slot     integer NOT NULL,        -- 0 .. max-1
    token    text NOT NULL,           -- the holding run's token
    computer text NOT NULL,
    host     text NOT NULL,
    pid      integer NOT NULL,
    label    text NOT NULL DEFAULT '',  -- what it is held for (xCAT node)
    taken    timestamptz NOT NULL,
    expires  timestamptz NOT NULL,
    PRIMARY KEY (class, slot)
);

CREATE INDEX IF NOT EXISTS reimage_slot_token ON reimage_slot (token);

INSERT INTO reimage_schema (version)
    SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM reimage_schema);
