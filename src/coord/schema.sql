-- reimage coordination store, schema version 2.
--
-- Plain tables, readable with psql. reimage creates them on first use (or
-- with `reimage setup-db`) inside one transaction under an advisory lock,
-- so several first runs at once do not race. The script is idempotent: run
-- on a store of version 1 it upgrades it (the statements marked "from 1").
--
-- A holder row is a lease: it is valid while `expires` (the database's
-- clock) lies in the future and it is not released. Its run renews it
-- every quarter lease; a run that dies stops renewing, and the next run
-- that wants the computer takes the row over once it has expired. Rows are
-- never deleted by reimage: a run's end marks its row released, so the
-- row keeps counting the computer's holders in `generation`.

CREATE TABLE IF NOT EXISTS reimage_schema (
    version integer NOT NULL
);

-- One holder per computer across the site.
CREATE TABLE IF NOT EXISTS reimage_holder (
    computer   text PRIMARY KEY,
    token      text NOT NULL,           -- random, one per run
    host       text NOT NULL,           -- management node that runs it
    pid        integer NOT NULL,
    command    text NOT NULL,           -- e.g. "provision --image c7"
    started    timestamptz NOT NULL,
    expires    timestamptz NOT NULL,
    generation bigint NOT NULL DEFAULT 1,  -- +1 for every run that takes it
    released   timestamptz,             -- the run ended and gave it back
    revoked    timestamptz              -- an admin deleted the live row
);

-- From 1: the columns version 2 added.
ALTER TABLE reimage_holder ADD COLUMN IF NOT EXISTS generation bigint NOT NULL DEFAULT 1;
ALTER TABLE reimage_holder ADD COLUMN IF NOT EXISTS released timestamptz;
ALTER TABLE reimage_holder ADD COLUMN IF NOT EXISTS revoked timestamptz;

-- A DELETE of a live holder row does not free the computer at once (its
-- run may still be loading it until its next renewal): the row stays,
-- marked revoked, and its run stops at that renewal and releases it. Rows
-- that are released or expired are deleted as asked.
CREATE OR REPLACE FUNCTION reimage_holder_revoke() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.released IS NULL AND OLD.expires > now() THEN
        UPDATE reimage_holder SET revoked = coalesce(revoked, now())
         WHERE computer = OLD.computer;
        RETURN NULL;
    END IF;
    RETURN OLD;
END
$$;

CREATE OR REPLACE FUNCTION reimage_holder_no_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM reimage_holder
                WHERE released IS NULL AND expires > now()) THEN
        RAISE EXCEPTION 'reimage_holder has live leases: TRUNCATE would let a second run load a computer that is being loaded; DELETE the rows instead (a live lease is revoked: its run stops at its next renewal and gives the computer back)';
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS reimage_holder_revoke ON reimage_holder;
CREATE TRIGGER reimage_holder_revoke BEFORE DELETE ON reimage_holder
    FOR EACH ROW EXECUTE FUNCTION reimage_holder_revoke();
DROP TRIGGER IF EXISTS reimage_holder_no_truncate ON reimage_holder;
CREATE TRIGGER reimage_holder_no_truncate BEFORE TRUNCATE ON reimage_holder
    FOR EACH STATEMENT EXECUTE FUNCTION reimage_holder_no_truncate();

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
    SELECT 2 WHERE NOT EXISTS (SELECT 1 FROM reimage_schema);
-- From 1 (never down: a newer reimage's schema is refused before this).
UPDATE reimage_schema SET version = 2 WHERE version < 2;
