"""How requests reach the service: HTTP today (`transport.http`), each transport parsing its own wire format
into calls on the models and mapping their errors to its status codes.
"""
