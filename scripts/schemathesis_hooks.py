"""Schemathesis hooks for Berth services: long polls stay short.

A `wait` parameter (query or body) asks the service to hold the request open for up to that
many seconds; generated values up to the documented maximum would make every run last minutes.
Integer waits within the documented range are cut to 1 s, which still exercises the long-poll
path. Anything else (a negative number, a string, a wait above the maximum) is left alone, so
the service's refusal is still tested: cutting an invalid 61 to a valid 1 made schemathesis
report a schema-violating request accepted.
"""

import schemathesis

# Both services' longest wait (SPEC: `wait` is 0 to 60 seconds).
MAX_WAIT_SECS = 60


def _short(value):
    if isinstance(value, int) and not isinstance(value, bool) and 1 < value <= MAX_WAIT_SECS:
        return 1
    return value


@schemathesis.hook
def map_query(context, query):
    if isinstance(query, dict) and "wait" in query:
        query["wait"] = _short(query["wait"])
    return query


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict) and "wait" in body:
        body["wait"] = _short(body["wait"])
    return body
