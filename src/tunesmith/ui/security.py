"""Who may use the dashboard, and what a browser is allowed to do with its pages.

- With a key (--api-key, or the token printed at start when the address is not loopback):
  `Authorization: Bearer KEY`, or `?token=KEY` once, which sets an HttpOnly cookie.
- Without one (loopback only): the Host header must name this machine, so a web page that
  rebinds its own domain name to 127.0.0.1 still cannot read the dashboard.
- Actions (POST) need the `X-Tunesmith` header, which no other site can send without a CORS
  preflight that we never answer.
- Every answer carries a Content-Security-Policy that allows our own scripts only: text from a
  run that did reach the page as HTML could still not run.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlencode

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

COOKIE = "tunesmith_ui_token"
ACTION_HEADER = "x-tunesmith"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class Guard(BaseHTTPMiddleware):
    def __init__(self, app, token: str | None):
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return _secured(refused)
        given = request.query_params.get("token")
        if self.token is not None and given is not None and request.method == "GET":
            # Take the token out of the address bar (and history) once it is in a cookie.
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            url = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            response: Response = RedirectResponse(url, status_code=303)
            response.set_cookie(COOKIE, given, httponly=True, samesite="strict")
            return _secured(response)
        return _secured(await call_next(request))

    def _refusal(self, request: Request) -> Response | None:
        if self.token is None:
            host = _host_name(request.headers.get("host", ""))
            if host not in LOCAL_HOSTS:
                return _error(403, "this dashboard answers only to 127.0.0.1 or localhost")
        elif not self._authorized(request):
            return _error(401, "a key is needed: open the URL printed at start (?token=...)")
        if request.method == "POST" and request.headers.get(ACTION_HEADER) != "1":
            return _error(403, f"actions need the {ACTION_HEADER} header")
        return None

    def _authorized(self, request: Request) -> bool:
        assert self.token is not None
        bearer = request.headers.get("authorization", "")
        candidates = [
            bearer.removeprefix("Bearer ").strip() if bearer.startswith("Bearer ") else None,
            request.cookies.get(COOKIE),
            request.query_params.get("token"),
        ]
        expected = self.token.encode()
        return any(c and hmac.compare_digest(c.encode(), expected) for c in candidates)


def _host_name(header: str) -> str:
    """`localhost:8080` -> localhost, `[::1]:8080` -> [::1]."""
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.split(":", 1)[0]


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _secured(response: Response) -> Response:
    response.headers.setdefault("content-security-policy", CSP)
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "no-referrer"
    return response
