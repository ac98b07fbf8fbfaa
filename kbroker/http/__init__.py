"""The broker's HTTP port (`kbroker serve --http-port`): /metrics and the web console.

`server` is a small HTTP/1.1 server on trio with a routing table; `prometheus` renders the
metrics page, `console` the HTML pages; `app` puts the routes together.
"""
