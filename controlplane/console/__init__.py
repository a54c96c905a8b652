"""The runs console (issue 19, docs/console.md): server-rendered pages under ``/console`` over the same
route functions, scopes and tenant rules as the API, and a little plain JavaScript that follows
``/api/v1/stream``."""
