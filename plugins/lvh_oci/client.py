"""A client for the OCI distribution HTTP API (the ``/v2/`` API every registry speaks), on httpx.

Why httpx and not an OCI client library: the Python ones (oras-py, python-dxf, …) either wrap
``requests`` without resumable downloads and without a way to verify a blob while it streams, or
are thin and unmaintained; the API itself is a dozen requests. httpx is well kept, does HTTP/1.1
keep-alive, timeouts, streaming, and drops ``Authorization`` on cross-origin redirects (blob
downloads redirect to object storage).

What it does: bearer-token and basic auth (challenge-driven, tokens cached per scope), retries
with exponential backoff on connection errors, 429 and 5xx (honouring ``Retry-After``),
resumable blob downloads (``Range`` on a ``.partial`` file) verified against their digest,
monolithic blob uploads skipped when the blob exists, manifests, tags and the catalog (paged).
Plain HTTP is used for loopback registries; ``insecure`` tries HTTPS without verification first,
then plain HTTP, like docker's "insecure registries".
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from lvh.api import Cancelled, StageError, UserError

from . import media
from .auth import Credentials, find_credentials
from .reference import is_loopback

#: (bytes just transferred, total or None) — called as a transfer moves on.
ProgressFn = Callable[[int, int | None], None]

MAX_MANIFEST = 4 * 1024 * 1024
CHUNK = 1 << 20
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class RegistryError(StageError):
    """The registry answered something we cannot work with (exit 1)."""


class DigestMismatch(RegistryError):
    """Downloaded bytes do not hash to the digest that was asked for."""


def sha256_file(path: Path, h: Any = None) -> Any:
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h


def _hasher(digest: str) -> Any:
    algo = digest.split(":", 1)[0]
    if algo not in ("sha256", "sha512"):
        raise RegistryError(f"unsupported digest algorithm in {digest!r}")
    return hashlib.new(algo)


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


def _error_text(r: httpx.Response) -> str:
    try:
        errs = r.json().get("errors") or []
        if errs:
            return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errs)
    except (ValueError, AttributeError):
        pass
    return f"HTTP {r.status_code}"


class RegistryClient:
    """One registry host. Thread-safe enough for one transfer at a time per instance."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: Credentials | bool | None = True,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        cancel: threading.Event | None = None,
        log: Any = None,
    ) -> None:
        self.host = host
        self.insecure = insecure
        self._creds_arg = credentials
        self._creds: Credentials | None = None
        self._creds_loaded = False
        self.retries = retries
        self.backoff = backoff
        self.cancel = cancel or threading.Event()
        self.log = log
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 15.0))
        self._base: str | None = None
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._http = httpx.Client(timeout=self._timeout, follow_redirects=True,
                                  verify=not insecure, headers={"User-Agent": "lvh-oci/1"})

    # --- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _debug(self, msg: str, *args: Any) -> None:
        if self.log is not None:
            self.log.debug(msg, *args)

    @property
    def credentials(self) -> Credentials | None:
        if not self._creds_loaded:
            if isinstance(self._creds_arg, Credentials):
                self._creds = self._creds_arg
            elif self._creds_arg is True:
                self._creds = find_credentials(self.host)
            self._creds_loaded = True
        return self._creds

    def base(self) -> str:
        """``scheme://host``: decided once (plain HTTP on loopback; probe for ``insecure``)."""
        if self._base is None:
            if is_loopback(self.host) and not self.insecure:
                self._base = f"http://{self.host}"
            elif self.insecure:
                self._base = f"http://{self.host}"
                try:
                    self._http.get(f"https://{self.host}/v2/", timeout=5)
                    self._base = f"https://{self.host}"
                except httpx.HTTPError:
                    self._debug("{}: no HTTPS, using plain HTTP (--insecure)", self.host)
            else:
                self._base = f"https://{self.host}"
        return self._base

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base() + path

    def _sleep(self, seconds: float) -> None:
        if self.cancel.wait(seconds):
            raise Cancelled("interrupted")

    def _auth_headers(self, scope: str) -> dict[str, str]:
        if scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        c = self.credentials
        if c and c.token and not self._tokens:
            return {"Authorization": f"Bearer {c.token}"}
        if self._basic and c and c.username is not None:
            return {"Authorization": httpx.BasicAuth(c.username, c.password or "")._auth_header}
        return {}

    def _authenticate(self, r: httpx.Response, scope: str) -> bool:
        """Answer a 401 challenge; True if a retry may now succeed."""
        scheme, params = _parse_challenge(r.headers.get("www-authenticate", ""))
        c = self.credentials
        if scheme == "basic":
            if self._basic or not c or c.username is None:
                return False
            self._basic = True
            return True
        if scheme != "bearer" or "realm" not in params or scope in self._tokens:
            return False
        q = {"service": params["service"]} if "service" in params else {}
        if scope:
            q["scope"] = scope
        auth = None
        if c and c.username is not None and c.password is not None:
            auth = httpx.BasicAuth(c.username, c.password)
        elif c and c.token:
            self._tokens[scope] = c.token
            return True
        try:
            tr = self._http.get(params["realm"], params=q, auth=auth, timeout=30)
        except httpx.HTTPError as e:
            raise RegistryError(f"cannot get a token from {params['realm']}: {e}") from None
        if tr.status_code in (401, 403):
            raise UserError(f"{self.host} refused the credentials from {c.source if c else 'nowhere'}",
                            hint=f"log in again (docker login {self.host}) or set LVH_REGISTRY_USERNAME/"
                                 "LVH_REGISTRY_PASSWORD")
        if tr.status_code != 200:
            raise RegistryError(f"token service {params['realm']} answered HTTP {tr.status_code}")
        d = tr.json()
        token = d.get("token") or d.get("access_token")
        if not token:
            raise RegistryError(f"token service {params['realm']} gave no token")
        self._tokens[scope] = token
        return True

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str = "",
        headers: dict[str, str] | None = None,
        content: Callable[[], bytes | Iterable[bytes]] | None = None,
        ok: tuple[int, ...] = (200,),
        allow: tuple[int, ...] = (),
        what: str = "",
        retry: bool = True,
    ) -> httpx.Response:
        """Send with auth and retries. ``content`` is a factory (a retry needs a fresh body).
        Statuses in ``ok`` and ``allow`` are returned; anything else raises. ``retry=False``: a
        transport error is raised as is (``httpx.TransportError``), for callers that resume."""
        attempt = 0
        authed = False
        while True:
            self.cancel.is_set() and self._raise_cancel()
            h = dict(headers or {})
            h.update(self._auth_headers(scope))
            try:
                r = self._http.request(method, self._url(path), headers=h,
                                       content=content() if content else None)
            except httpx.TransportError as e:
                if not retry:
                    raise
                if self._is_tls_error(e):
                    raise UserError(f"TLS error talking to {self.host}: {e}",
                                    hint="for a registry without a valid certificate use --insecure",
                                    ) from None
                # a refused connection or an unknown host rarely heals: fewer tries than a broken read
                tries = min(self.retries, 2) if isinstance(e, httpx.ConnectError) else self.retries
                if attempt >= tries:
                    raise UserError(f"cannot reach registry {self.host}: {e}",
                                    hint=f"check the address and the network (tried {attempt + 1} times)",
                                    ) from None
                attempt += 1
                self._debug("{} {}: {} — retry {}/{}", method, path, e, attempt, self.retries)
                self._sleep(self._delay(attempt, None))
                continue
            if r.status_code == 401 and not authed:
                authed = True
                if self._authenticate(r, scope):
                    continue
            if r.status_code in ok or r.status_code in allow:
                return r
            if r.status_code in RETRY_STATUS and attempt < self.retries and retry:
                attempt += 1
                self._debug("{} {}: HTTP {} — retry {}/{}", method, path, r.status_code, attempt,
                            self.retries)
                self._sleep(self._delay(attempt, r.headers.get("retry-after")))
                continue
            self._raise_for(r, what or f"{method} {path}")

    def _raise_cancel(self) -> None:
        raise Cancelled("interrupted")

    @staticmethod
    def _is_tls_error(e: Exception) -> bool:
        return "SSL" in type(e.__context__ or e).__name__ or "CERTIFICATE" in str(e).upper() \
            or "WRONG_VERSION_NUMBER" in str(e)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), 60.0)
            except ValueError:
                pass
        return min(self.backoff * (2 ** (attempt - 1)), 30.0) * (0.75 + random.random() / 2)

    def _raise_for(self, r: httpx.Response, what: str) -> None:
        detail = _error_text(r)
        if r.status_code in (401, 403):
            c = self.credentials
            raise UserError(f"access denied to {what} on {self.host} ({detail})",
                            hint=(f"the credentials from {c.source} are not allowed to do this" if c else
                                  f"log in first: docker login {self.host}, or set "
                                  "LVH_REGISTRY_USERNAME/LVH_REGISTRY_PASSWORD"))
        if r.status_code == 404:
            raise UserError(f"not found on {self.host}: {what} ({detail})",
                            hint="check the repository and tag (lvh kernels catalog lists tags)")
        raise RegistryError(f"{self.host}: {what} failed: {detail}")

    # --- manifests ----------------------------------------------------------------------------

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest) of a manifest or index, verified if ``ref`` is a digest."""
        r = self.request("GET", f"/v2/{repo}/manifests/{ref}", scope=f"repository:{repo}:pull",
                         headers={"Accept": media.ACCEPT}, what=f"{repo}:{ref}")
        body = r.content
        if len(body) > MAX_MANIFEST:
            raise RegistryError(f"manifest {repo}:{ref} is larger than {MAX_MANIFEST} bytes")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ref.startswith("sha"):
            h = _hasher(ref)
            h.update(body)
            if f"{ref.split(':')[0]}:{h.hexdigest()}" != ref:
                raise DigestMismatch(f"manifest {repo}@{ref} does not match its digest")
            digest = ref
        mt = r.headers.get("content-type", "").split(";")[0].strip()
        try:
            doc = json.loads(body)
        except ValueError:
            raise RegistryError(f"manifest {repo}:{ref} is not JSON") from None
        mt = doc.get("mediaType") or mt
        return body, mt, digest

    def head_manifest(self, repo: str, ref: str) -> str | None:
        """The digest ``ref`` points at, or None if absent."""
        r = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", scope=f"repository:{repo}:pull",
                         headers={"Accept": media.ACCEPT}, allow=(404,), what=f"{repo}:{ref}")
        if r.status_code == 404:
            return None
        d = r.headers.get("docker-content-digest")
        if d:
            return d
        return self.get_manifest(repo, ref)[2]

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        self.request("PUT", f"/v2/{repo}/manifests/{ref}", scope=f"repository:{repo}:pull,push",
                     headers={"Content-Type": media_type}, content=lambda: body, ok=(200, 201, 202),
                     what=f"push manifest {repo}:{ref}")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    # --- blobs --------------------------------------------------------------------------------

    def blob_exists(self, repo: str, digest: str) -> bool:
        r = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull,push",
                         allow=(404,), what=f"blob {digest}")
        return r.status_code == 200

    def get_blob_bytes(self, repo: str, digest: str, limit: int = MAX_MANIFEST) -> bytes:
        """A small blob (a config), verified."""
        r = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull",
                         what=f"blob {digest}")
        if len(r.content) > limit:
            raise RegistryError(f"blob {digest} is larger than {limit} bytes")
        h = _hasher(digest)
        h.update(r.content)
        if f"{digest.split(':')[0]}:{h.hexdigest()}" != digest:
            raise DigestMismatch(f"blob {digest} of {repo} does not match its digest (corrupted)")
        return r.content

    def upload_blob(self, repo: str, digest: str, size: int, open_at: Callable[[int], Iterable[bytes]],
                    progress: ProgressFn | None = None) -> bool:
        """Upload a blob unless the registry has it; ``open_at(offset)`` yields its bytes from
        ``offset``. Blobs larger than ``chunk_size`` go in chunks (PATCH with Content-Range; a
        broken chunk resumes where the registry says it stopped), which also passes proxies
        that refuse huge request bodies; smaller ones in one PUT. Returns True if bytes were sent."""
        if self.blob_exists(repo, digest):
            if progress:
                progress(size, size)
            return False
        reported = [0]

        def report_to(n: int) -> None:
            if progress and n != reported[0]:
                progress(n - reported[0], size)
            reported[0] = n

        chunked = bool(self.chunk_size) and size > self.chunk_size
        for attempt in range(self.retries + 1):
            loc = self._start_upload(repo)
            try:
                if chunked:
                    loc = self._upload_chunks(repo, loc, size, open_at, report_to)
                    self._finish_upload(repo, loc, digest, None, 0)
                else:
                    self._finish_upload(repo, loc, digest, self._body(open_at, 0, size, report_to), size)
                report_to(size)
                return True
            except _ChunksUnsupported:
                self._debug("{} refuses chunked uploads; sending {} in one request", self.host, digest[:19])
                chunked = False
            except (httpx.TransportError, RegistryError) as e:
                if attempt >= self.retries:
                    if isinstance(e, httpx.TransportError):
                        raise RegistryError(f"uploading {digest} to {self.host} failed: {e}") from None
                    raise
                self._debug("upload of {} failed ({}); retry {}/{}", digest[:19], e, attempt + 1, self.retries)
                self._sleep(self._delay(attempt + 1, None))
            report_to(0)
        return True

    #: Blobs larger than this are uploaded in chunks of this size (``LVH_OCI_CHUNK_MB``; 0 = never).
    chunk_size: int = int(os.environ.get("LVH_OCI_CHUNK_MB", "64")) * 1024 * 1024

    def _start_upload(self, repo: str) -> str:
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=f"repository:{repo}:pull,push",
                         ok=(202,), what=f"start upload to {repo}")
        return self._location(repo, r, None)

    def _location(self, repo: str, r: httpx.Response, current: str | None) -> str:
        loc = r.headers.get("location")
        if not loc:
            if current:
                return current
            raise RegistryError(f"{self.host} gave no upload location")
        return str(httpx.URL(self._url(f"/v2/{repo}/blobs/uploads/")).join(loc))

    def _body(self, open_at: Callable[[int], Iterable[bytes]], offset: int, length: int,
              report_to: Callable[[int], None]) -> Callable[[], Iterator[bytes]]:
        def gen() -> Iterator[bytes]:
            sent = 0
            for chunk in open_at(offset):
                if self.cancel.is_set():
                    raise Cancelled("interrupted")
                chunk = chunk[: length - sent]
                if not chunk:
                    break
                sent += len(chunk)
                report_to(offset + sent)
                yield chunk
                if sent >= length:
                    break
        return gen

    def _upload_chunks(self, repo: str, loc: str, size: int, open_at: Callable[[int], Iterable[bytes]],
                       report_to: Callable[[int], None]) -> str:
        scope = f"repository:{repo}:pull,push"
        offset = 0
        failures = 0
        while offset < size:
            n = min(self.chunk_size, size - offset)
            try:
                r = self.request("PATCH", loc, scope=scope, retry=False, ok=(202,), allow=(404, 405, 416),
                                 content=self._body(open_at, offset, n, report_to),
                                 headers={"Content-Type": "application/octet-stream",
                                          "Content-Range": f"{offset}-{offset + n - 1}",
                                          "Content-Length": str(n)}, what=f"upload chunk to {repo}")
                if r.status_code in (404, 405) and offset == 0:
                    raise _ChunksUnsupported()
                if r.status_code == 416:
                    raise RegistryError("chunk out of order")
                if r.status_code == 404:
                    raise RegistryError("the registry forgot the upload")
                loc = self._location(repo, r, loc)
                offset += n
            except (httpx.TransportError, RegistryError) as e:
                failures += 1
                if failures > self.retries:
                    raise RegistryError(f"upload to {self.host} broke: {e}") from None
                self._sleep(self._delay(failures, None))
                # Ask the registry how much it has, and go on from there.
                st = self.request("GET", loc, scope=scope, ok=(204,), allow=(404,), what="upload status")
                if st.status_code == 404:
                    raise RegistryError("the registry forgot the upload") from None
                loc = self._location(repo, st, loc)
                m = re.match(r"^(?:bytes=)?0-(\d+)$", st.headers.get("range", ""))
                offset = int(m.group(1)) + 1 if m else 0
                self._debug("upload resumes at byte {} after: {}", offset, e)
                report_to(offset)
        return loc

    def _finish_upload(self, repo: str, loc: str, digest: str, body: Callable[[], Iterator[bytes]] | None,
                       size: int) -> None:
        sep = "&" if "?" in loc else "?"
        self.request("PUT", f"{loc}{sep}digest={digest}", scope=f"repository:{repo}:pull,push",
                     content=body or (lambda: b""), retry=False,
                     headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                     ok=(201, 204), what=f"upload {digest} to {repo}")

    def download_blob(self, repo: str, digest: str, dest: Path, *, size: int | None = None,
                      progress: ProgressFn | None = None, max_size: int | None = None) -> int:
        """Download a blob to ``dest``, resuming from ``dest.partial`` if an earlier try left one,
        and verify its digest (and size). On a mismatch nothing is kept and
        :class:`DigestMismatch` is raised. Returns the number of bytes fetched now."""
        if max_size is not None and size is not None and size > max_size:
            raise UserError(f"blob {digest} is {size} bytes, more than the limit {max_size}",
                            hint="raise the limit with --max-size if you trust this registry")
        partial = dest.with_name(dest.name + ".partial")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fetched = 0
        attempt = 0
        scope = f"repository:{repo}:pull"
        while True:
            h = _hasher(digest)
            have = 0
            if partial.exists():
                have = partial.stat().st_size
                if size is not None and have > size:
                    partial.unlink()
                    have = 0
                else:
                    sha256_file(partial, h)
            if have and progress:
                progress(have, size)
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with self._stream(repo, digest, scope, headers) as r:
                    if have and r.status_code == 200:  # no range support: start over
                        self._debug("{}: no range support, restarting {}", self.host, digest[:19])
                        if progress:
                            progress(-have, size)
                        h, have = _hasher(digest), 0
                        mode = "wb"
                    else:
                        mode = "ab" if have else "wb"
                    if have:
                        self._debug("resuming {} at byte {}", digest[:19], have)
                    with open(partial, mode) as fh:
                        for chunk in r.iter_bytes(CHUNK):
                            if self.cancel.is_set():
                                raise Cancelled("interrupted")
                            fh.write(chunk)
                            h.update(chunk)
                            have += len(chunk)
                            fetched += len(chunk)
                            if progress:
                                progress(len(chunk), size)
                            if (size is not None and have > size) or (
                                    max_size is not None and have > max_size):
                                raise DigestMismatch(f"blob {digest} is longer than its descriptor says")
                break
            except httpx.TransportError as e:
                if attempt >= self.retries:
                    raise RegistryError(f"downloading {digest} from {self.host} failed: {e} "
                                        f"(the partial file is kept; run again to resume)") from None
                attempt += 1
                self._debug("download of {} broke at byte {}: {} — retry {}/{}", digest[:19],
                            partial.stat().st_size if partial.exists() else 0, e, attempt, self.retries)
                if progress and partial.exists():
                    progress(-partial.stat().st_size, size)
                self._sleep(self._delay(attempt, None))
            except DigestMismatch:
                partial.unlink(missing_ok=True)
                raise
        got = f"{digest.split(':')[0]}:{h.hexdigest()}"
        if got != digest or (size is not None and have != size):
            partial.unlink(missing_ok=True)
            raise DigestMismatch(f"blob {digest} from {self.host}/{repo} is corrupted: its content "
                                 f"hashes to {got} ({have} bytes); nothing was kept")
        os.replace(partial, dest)
        return fetched

    def _stream(self, repo: str, digest: str, scope: str, headers: dict[str, str]) -> Any:
        # Authenticate/retry on a cheap HEAD first, then stream with the same credentials.
        self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope, what=f"blob {digest}")
        h = dict(headers)
        h.update(self._auth_headers(scope))
        return _CheckedStream(self, self._http.stream("GET", self._url(f"/v2/{repo}/blobs/{digest}"),
                                                       headers=h), f"blob {digest}")

    # --- listing ------------------------------------------------------------------------------

    def _paged(self, path: str, key: str, scope: str) -> list[str]:
        out: list[str] = []
        url: str | None = path
        while url:
            r = self.request("GET", url, scope=scope, what=path.split("?")[0])
            out.extend(r.json().get(key) or [])
            link = r.headers.get("link", "")
            m = re.search(r"<([^>]+)>\s*;\s*rel=\"?next\"?", link)
            url = str(httpx.URL(self._url(path)).join(m.group(1))) if m else None
        return out

    def list_tags(self, repo: str) -> list[str]:
        return self._paged(f"/v2/{repo}/tags/list?n=1000", "tags", f"repository:{repo}:pull")

    def catalog(self) -> list[str]:
        return self._paged("/v2/_catalog?n=1000", "repositories", "registry:catalog:*")


class _ChunksUnsupported(Exception):
    pass


class _CheckedStream:
    """``httpx.Client.stream`` that raises our errors for bad statuses."""

    def __init__(self, client: RegistryClient, cm: Any, what: str) -> None:
        self.client, self.cm, self.what = client, cm, what

    def __enter__(self) -> httpx.Response:
        r = self.cm.__enter__()
        if r.status_code not in (200, 206):
            r.read()
            self.cm.__exit__(None, None, None)
            if r.status_code in RETRY_STATUS:
                raise httpx.RemoteProtocolError(f"HTTP {r.status_code}")
            self.client._raise_for(r, self.what)
        return r

    def __exit__(self, *exc: Any) -> None:
        self.cm.__exit__(*exc)
