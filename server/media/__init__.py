"""Server-side media: ICE servers handed to clients, and the aiortc peers the server runs (pre-call check)."""
