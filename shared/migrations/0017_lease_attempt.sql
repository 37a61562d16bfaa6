-- Which claim or takeover took a run's current lease: a random id the worker makes for each
-- attempt (shared/store/runs.py). When the statement commits but its answer never reaches the
-- worker (the connection dropped), the run message comes back naming that attempt, and takes the
-- run back at once instead of waiting out a lease that nobody renews.
ALTER TABLE executions ADD COLUMN lease_attempt text;
