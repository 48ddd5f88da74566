"""How requests reach the service: HTTP today (`transport.http`), each transport parsing its own wire format
into the data plane's typed requests (`app.dataplane`), encoding its answers and mapping its errors to the
transport's status codes.
"""
