-- Fixed search_path for the schema's functions.
--
-- A function without its own search_path resolves unqualified names through
-- the caller's, so a role that can put an object earlier on that path (a
-- table or function of the same name in another schema) could redirect what
-- the function touches. Supabase's database advisor reports such functions
-- (lint 0011, function_search_path_mutable). Each function now runs with an
-- empty search_path and names the project's objects with their schema;
-- built-ins (now(), pg_current_xact_id(), the types) live in pg_catalog,
-- which is always searched first. CREATE OR REPLACE keeps each function's
-- identity, so the triggers that call them stay as they are.

CREATE OR REPLACE FUNCTION public.set_updated_at() RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

-- new_rows and old_rows are the trigger's transition tables, found by name
-- before any schema is searched.
CREATE OR REPLACE FUNCTION public.record_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO public.change_log (table_name, row_id, op)
        SELECT TG_TABLE_NAME, n.id, 'insert' FROM new_rows n ORDER BY n.id;
    ELSIF TG_OP = 'UPDATE' THEN
        -- A row whose id changed is, to a mirror, a delete of the old id.
        INSERT INTO public.change_log (table_name, row_id, op)
        SELECT TG_TABLE_NAME, o.id, 'delete' FROM old_rows o
        WHERE NOT EXISTS (SELECT FROM new_rows n WHERE n.id = o.id)
        ORDER BY o.id;
        INSERT INTO public.change_log (table_name, row_id, op)
        SELECT TG_TABLE_NAME, n.id, 'update' FROM new_rows n ORDER BY n.id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO public.change_log (table_name, row_id, op)
        SELECT TG_TABLE_NAME, o.id, 'delete' FROM old_rows o ORDER BY o.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION public.refuse_truncate() RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    RAISE EXCEPTION 'TRUNCATE % would bypass the change feed', TG_TABLE_NAME
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Use DELETE FROM ' || TG_TABLE_NAME || ' so that clients see the rows go.';
END
$$;

CREATE OR REPLACE FUNCTION public.prune_change_log(keep interval DEFAULT interval '30 days') RETURNS bigint
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    cut_xid xid8;
    cut_id  bigint;
    removed bigint;
BEGIN
    -- The horizon row lock serialises concurrent prunes.
    PERFORM FROM public.change_log_horizon FOR UPDATE;
    SELECT c.xid, c.id INTO cut_xid, cut_id
    FROM public.change_log c
    WHERE c.changed_at < now() - keep
      AND c.xid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY c.xid DESC, c.id DESC
    LIMIT 1;
    IF cut_xid IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE public.change_log_horizon h
       SET xid = cut_xid, id = cut_id, pruned_at = now()
     WHERE (h.xid, h.id) < (cut_xid, cut_id);
    DELETE FROM public.change_log c WHERE (c.xid, c.id) <= (cut_xid, cut_id);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;
