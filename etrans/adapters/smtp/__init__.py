"""SMTP delivery: a pool of reusable client sessions, one per sendmail worker."""
