-- updated_at follows every change without each writer having to remember it.
-- A statement that sets updated_at itself keeps its value: the bulk import
-- carries the legacy timestamps over, and re-running it must not reset them.

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER learning_content_updated_at
    BEFORE UPDATE ON learning_content
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TRIGGER content_fragments_updated_at
    BEFORE UPDATE ON content_fragments
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TRIGGER rankings_updated_at
    BEFORE UPDATE ON rankings
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
