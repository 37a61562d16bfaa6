-- Compliance policy documents as applied, by (name, version): recorded by the worker that applies a
-- version, so an execution's audit package can embed its policy after the shipped files moved on.
CREATE TABLE policy_documents (
    name        text NOT NULL,
    version     text NOT NULL,
    document    jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);
