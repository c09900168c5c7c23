"""eventbus-redis: Redis backends of eventbus (backend names `redis` and `redis-streams`)."""
