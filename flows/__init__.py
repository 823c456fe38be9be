"""One flow per procedure: health, failover, fallback, recovery, replicate, drill."""
