"""Alerts: a balance below its threshold, a budget at 80% or 100%, a key's spend spike, a
deployment's breaker opening. Each fires once per crossing (a state row every worker shares) and
is delivered by signed webhook and by email, retried with backoff, each attempt logged."""
