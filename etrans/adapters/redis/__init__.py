"""Redis: the credential cache (hash ``auth``) and source, quota and rate counters, idempotency
keys, the API-key cache, sendmail's delivery marks; all on one Trio-native client per process
(:mod:`etrans.adapters.redis.client`)."""
