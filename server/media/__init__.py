"""Server-side media: the aiortc peers the server runs itself (pre-call check)."""
