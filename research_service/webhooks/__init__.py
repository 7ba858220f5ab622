"""Completion webhooks: a run's end POSTed to a URL, signed per Standard Webhooks, retried.

`target` checks a URL where it is given, `outbox` (and the store modules beside it) keeps the
deliveries until they are done, `notification` says what is sent, `signing` signs it, and
`dispatcher` sends it, again and again until it is taken or a day has passed.
"""
