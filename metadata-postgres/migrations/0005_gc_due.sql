-- 0005_gc_due: the grace period applies when the collector decides, not when a review
-- was queued or last looked at. The same logical change as metadata-sqlite's 0005_gc_due.sql.
--
-- `due_at` is now only a deliberate postponement: a review with `due_at <= since` (as
-- queued) is due for a collector once `since` is its grace period in the past; one with
-- `due_at > since` (an untagged manifest parked while the untagged policy is off, or one
-- younger than the policy's time to live) is due once `due_at` has also passed.
--
-- Link and blob reviews were only ever postponed to wait out the grace period of the
-- collector that looked at them: that wait is dropped (the next collector applies its
-- own). Manifest postponements stay: parked and time-to-live waits cannot be told apart.
UPDATE gc_reviews SET due_at = since WHERE kind IN ('link', 'blob') AND due_at > since;

DROP INDEX gc_reviews_by_due;
-- Reviews waiting out a grace period, by when they were queued.
CREATE INDEX gc_reviews_by_since ON gc_reviews (since) WHERE due_at <= since;
-- Postponed reviews, by the end of their postponement.
CREATE INDEX gc_reviews_postponed ON gc_reviews (due_at) WHERE due_at > since;
