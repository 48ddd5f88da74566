"""How requests reach the service: HTTP (`transport.http`) and gRPC (`transport.grpc`, with SERVE_GRPC_PORT),
each transport parsing its own wire format into the data plane's typed requests (`app.dataplane`), encoding its
answers and mapping its errors to the transport's status codes. Neither imports the other: `python -m app`
hands the gRPC transport to the HTTP app, whose lifespan runs it.
"""
