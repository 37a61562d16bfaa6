-- Workspace webhook secrets were created as `whsec_` + URL-safe base64 without padding, which the
-- Standard Webhooks reference verifiers (standard base64) cannot decode. Rewrite each such secret
-- into the standard alphabet with padding: the same key bytes, so every signature made before
-- still verifies, and a receiver that kept the old string and decodes it as we do (either
-- alphabet) keeps verifying new signatures. Secrets that are not base64 at all (the key is then
-- the UTF-8 text itself) and ones already in standard form are left as they are.
UPDATE workspaces
SET webhook_secret = 'whsec_' || translate(substr(webhook_secret, 7), '-_', '+/')
                     || repeat('=', (4 - length(substr(webhook_secret, 7)) % 4) % 4)
WHERE webhook_secret LIKE 'whsec\_%'
  AND substr(webhook_secret, 7) ~ '^[A-Za-z0-9_-]+$'
  AND length(substr(webhook_secret, 7)) % 4 <> 1
  AND (substr(webhook_secret, 7) ~ '[-_]' OR length(substr(webhook_secret, 7)) % 4 <> 0);
