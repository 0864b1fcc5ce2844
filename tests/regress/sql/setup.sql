-- Installs opsmeter into the regression database, plus a helper the other files use to show
-- an error's SQLSTATE next to its message.
CREATE EXTENSION opsmeter;

SELECT extname, extversion = opsmeter_version() AS versions_agree, extrelocatable
  FROM pg_extension WHERE extname = 'opsmeter';

-- Functions in the schema CREATE EXTENSION picked (public here); tables in opsmeter.
SELECT n.nspname, p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'opsmeter')
 ORDER BY 1, 2;

SELECT c.relname, c.relkind
  FROM pg_class c WHERE c.relnamespace = 'opsmeter'::regnamespace AND c.relkind IN ('r', 'p')
 ORDER BY 1;

CREATE SCHEMA regress;
-- regress.err(sql): runs sql, returns 'ok' or 'SQLSTATE: message' and the hint if any.
CREATE FUNCTION regress.err(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; hint text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || CASE WHEN hint <> '' THEN E'\nHINT: ' || hint ELSE '' END;
END $$;
