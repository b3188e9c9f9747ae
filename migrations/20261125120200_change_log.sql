-- The change feed's log.
--
-- Every insert, update and delete on the four content tables leaves a row
-- here, stamped with the writing transaction's id (xid8). Readers order by
-- (xid, id) and only hand out transactions older than the oldest one still
-- running, pg_snapshot_xmin(pg_current_snapshot()): a sequence or a
-- timestamp alone would skip rows whose transaction commits after a later
-- one. The row itself is read from its table when the feed is served, so the
-- log stays small and a deleted row leaves only its id behind (a tombstone).

CREATE TABLE change_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    table_name text        NOT NULL
        CONSTRAINT change_log_table_name_check CHECK (table_name IN
            ('learning_content', 'content_fragments', 'fragment_assets', 'rankings')),
    row_id     integer     NOT NULL,
    op         text        NOT NULL
        CONSTRAINT change_log_op_check CHECK (op IN ('insert', 'update', 'delete')),
    changed_at timestamptz NOT NULL DEFAULT now()
);

-- The feed's cursor is (xid, id); this index serves it in order.
CREATE INDEX change_log_cursor ON change_log (xid, id);

-- Statement-level triggers with transition tables: a bulk import of
-- thousands of rows logs them with one INSERT ... SELECT, not one call per row.
CREATE FUNCTION record_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO change_log (table_name, row_id, op)
        SELECT TG_TABLE_NAME, n.id, 'insert' FROM new_rows n ORDER BY n.id;
    ELSIF TG_OP = 'UPDATE' THEN
        -- A row whose id changed is, to a mirror, a delete of the old id.
        INSERT INTO change_log (table_name, row_id, op)
        SELECT TG_TABLE_NAME, o.id, 'delete' FROM old_rows o
        WHERE NOT EXISTS (SELECT FROM new_rows n WHERE n.id = o.id)
        ORDER BY o.id;
        INSERT INTO change_log (table_name, row_id, op)
        SELECT TG_TABLE_NAME, n.id, 'update' FROM new_rows n ORDER BY n.id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO change_log (table_name, row_id, op)
        SELECT TG_TABLE_NAME, o.id, 'delete' FROM old_rows o ORDER BY o.id;
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE fires no row or transition triggers: the feed would never learn
-- that the rows are gone. DELETE does the same job and is logged.
CREATE FUNCTION refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'TRUNCATE % would bypass the change feed', TG_TABLE_NAME
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Use DELETE FROM ' || TG_TABLE_NAME || ' so that clients see the rows go.';
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['learning_content', 'content_fragments', 'fragment_assets', 'rankings'] LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION record_change()', t || '_log_insert', t);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION record_change()', t || '_log_update', t);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION record_change()', t || '_log_delete', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I
                        FOR EACH STATEMENT EXECUTE FUNCTION refuse_truncate()', t || '_no_truncate', t);
    END LOOP;
END
$$;

-- How far the log has been pruned. A client whose cursor is at or below
-- this point may have missed changes and must take a fresh snapshot.
CREATE TABLE change_log_horizon (
    singleton boolean PRIMARY KEY DEFAULT true CONSTRAINT change_log_horizon_singleton CHECK (singleton),
    xid       xid8   NOT NULL,
    id        bigint NOT NULL,
    pruned_at timestamptz
);
INSERT INTO change_log_horizon (xid, id) VALUES ('0', 0);

-- Removes the log entries older than `keep` (only whole, finished
-- transactions, as a prefix in feed order) and moves the horizon past them.
-- Returns how many entries went. Run it from a scheduled job, e.g.
-- SELECT prune_change_log(interval '30 days');
CREATE FUNCTION prune_change_log(keep interval DEFAULT interval '30 days') RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    cut_xid xid8;
    cut_id  bigint;
    removed bigint;
BEGIN
    -- The horizon row lock serialises concurrent prunes.
    PERFORM FROM change_log_horizon FOR UPDATE;
    SELECT c.xid, c.id INTO cut_xid, cut_id
    FROM change_log c
    WHERE c.changed_at < now() - keep
      AND c.xid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY c.xid DESC, c.id DESC
    LIMIT 1;
    IF cut_xid IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE change_log_horizon h
       SET xid = cut_xid, id = cut_id, pruned_at = now()
     WHERE (h.xid, h.id) < (cut_xid, cut_id);
    DELETE FROM change_log c WHERE (c.xid, c.id) <= (cut_xid, cut_id);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;

ALTER TABLE change_log         ENABLE ROW LEVEL SECURITY;
ALTER TABLE change_log_horizon ENABLE ROW LEVEL SECURITY;
