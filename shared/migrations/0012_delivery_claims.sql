-- Webhook deliveries are claimed, not locked, while an attempt is in flight: the claim (a token
-- and a lease) is committed before the POST and the outcome is recorded only by the claim's
-- holder, so no transaction or row lock is held across an outbound HTTP call. Execution
-- callbacks get the retry schedule alert deliveries have (next_attempt_at, swept when due).
ALTER TABLE webhook_deliveries
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN claim_token     text,
    ADD COLUMN claimed_until   timestamptz;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

ALTER TABLE alert_deliveries
    ADD COLUMN claim_token   text,
    ADD COLUMN claimed_until timestamptz;
