"""The broker's HTTP port (`kbroker serve --http-port`): /metrics, the web console and the
fault injection API (/api/faults).

`server` is a small HTTP/1.1 server on trio with a routing table; `prometheus` renders the
metrics page, `console` the HTML pages, `faults` the JSON API of kbroker/faults.py; `app`
puts the routes together.
"""
