"""Redis: the credential cache (hash ``auth``) and source, quota and rate counters, idempotency
keys, the API-key cache, sendmail's delivery marks; the redis-py client (threads)."""
