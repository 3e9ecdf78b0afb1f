"""HTTP helpers shared by the handlers: the response envelope, error mapping, identity."""
