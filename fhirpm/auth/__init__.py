"""SMART App Launch 2.x: the built-in authorization server (server, routes, pages) and the
pure scope model (scopes) and Principal the resource server enforces with."""
