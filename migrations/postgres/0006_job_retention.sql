-- Retention (BERTH_JOB_RETENTION_SECS) finds finished jobs by when they finished.
CREATE INDEX deploy_job_finished ON deploy_job (finished_at) WHERE finished_at IS NOT NULL;
