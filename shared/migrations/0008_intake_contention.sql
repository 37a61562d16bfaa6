-- Intake under concurrency. The foreign key executions.workspace_id → workspaces made every insert
-- take FOR KEY SHARE on its workspace's single row; fifty concurrent inserts into one workspace
-- then share that row lock through MultiXact ids, which cost PostgreSQL more CPU than the insert
-- itself (intake went from about 1,250 to 1,700 req/s on 2 cores without it). The constraint
-- guarded nothing that can happen: workspace_id is only ever taken from an authenticated key,
-- and workspaces are never deleted (no API does; the trigger below refuses it outright).
ALTER TABLE executions DROP CONSTRAINT executions_workspace_id_fkey;

CREATE FUNCTION warden_refuse_workspace_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'workspaces are never deleted: executions refer to them (%)', OLD.id
    USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER workspaces_never_deleted BEFORE DELETE ON workspaces
  FOR EACH ROW EXECUTE FUNCTION warden_refuse_workspace_delete();
