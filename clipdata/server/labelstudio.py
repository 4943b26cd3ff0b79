"""Label Studio's side of the ML backend protocol, without HTTP serving: the labeling config
(one single-choice `Choices` over an `Image`), where a task's image lives, and a small client
for Label Studio's API (image bytes, a project's annotations) that never leaves the origin it
was given. Rules: formats/labelstudio-backend.md."""
from __future__ import annotations

import base64
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..captions import nfc
from ..errors import ClipdataError, first_line
from ..xmlfile import parse as parse_xml

CONFIG = "the project's labeling config"
MAX_IMAGE_BYTES = 256 << 20      # one image over Label Studio's API
MAX_EXPORT_BYTES = 1 << 30       # a project's annotations
TIMEOUT = 30.0                   # seconds for one request to Label Studio
SINGLE = ("single", "single-radio")
SERVED = ("/data/upload/", "/data/local-files/")  # paths Label Studio serves (other paths are files)


class BackendError(ClipdataError):
    """A request, a task or a project the backend cannot serve: one line, answered as a 4xx
    (or, for one task of many, as that task's error while the others are predicted)."""


@dataclass(frozen=True)
class Control:
    """The one single-choice `Choices` of a project and the `Image` it labels."""

    from_name: str              # the Choices' name (a result's from_name)
    to_name: str                # the Image's name (a result's to_name)
    key: str                    # the task data key of the image: $image -> image
    choices: tuple[str, ...]    # Choice values, as written
    result_value: dict = field(default_factory=dict, compare=False)  # class -> what a result says (alias)

    def check_classes(self, names: list[str]) -> None:
        """The project's choices must be the backend's classes (order free)."""
        mine = {nfc(n) for n in names}
        theirs = {nfc(c) for c in self.choices}
        if mine != theirs:
            missing, extra = sorted(mine - theirs), sorted(theirs - mine)
            raise BackendError(
                "the project's choices differ from the backend's classes"
                + (f"; not in the project: {', '.join(missing)}" if missing else "")
                + (f"; not given to the backend: {', '.join(extra)}" if extra else ""),
                where=CONFIG, hint="make the project's <Choice> values the classes given to clipdata review backend")


def _tag(el: ET.Element) -> str:
    return el.tag.lower() if isinstance(el.tag, str) else ""


def parse_config(xml: object) -> Control:
    """The Control of a labeling config, or a BackendError saying what is wrong with it."""
    if not isinstance(xml, str) or not xml.strip():
        raise BackendError("no labeling config", where=CONFIG, hint="Label Studio sends it as label_config or schema")
    root = parse_xml(xml.encode("utf-8", "surrogatepass"), CONFIG, BackendError)
    everything = list(root.iter())  # iterative: no recursion on the config's depth
    images = {el.get("name"): el for el in everything if _tag(el) == "image" and el.get("name")}
    choices = [el for el in everything if _tag(el) == "choices"]
    if not choices:
        raise BackendError("no <Choices> control: this backend predicts one class per image", where=CONFIG,
                           hint='add <Choices name="class" toName="image" choice="single"> with a <Choice> per class')
    if len(choices) > 1:
        names = ", ".join(repr(c.get("name")) for c in choices)
        raise BackendError(f"{len(choices)} <Choices> controls ({names}): which one to predict is ambiguous",
                           where=CONFIG, hint="keep one <Choices> control in a project the backend serves")
    ctl = choices[0]
    name, to = ctl.get("name"), ctl.get("toName")
    if not name or not to:
        raise BackendError("the <Choices> control needs name and toName", where=CONFIG)
    if (ctl.get("choice") or "single").lower() not in SINGLE:
        raise BackendError(f'<Choices name="{name}"> allows {ctl.get("choice")} choices; this backend gives one class',
                           where=CONFIG, hint='set choice="single"')
    if "," in to or to not in images:
        raise BackendError(f'<Choices name="{name}"> labels {to!r}, which is not one <Image> of the config',
                           where=CONFIG, hint='point toName at the <Image name="..."> the class describes')
    value = images[to].get("value") or ""
    if not value.startswith("$") or len(value) < 2:
        raise BackendError(f'<Image name="{to}"> has value {value!r}, not a task field like "$image"', where=CONFIG)
    if ctl.get("value"):
        raise BackendError(f'<Choices name="{name}"> takes its choices from the task ({ctl.get("value")}); '
                           "this backend needs them written in the config", where=CONFIG)
    values, result = [], {}
    for el in ctl.iter():
        if _tag(el) != "choice":
            continue
        v = el.get("value")
        if v is None:
            raise BackendError(f'a <Choice> of "{name}" has no value', where=CONFIG)
        values.append(v)
        result[nfc(v)] = el.get("alias") or v
    if len(set(values)) != len(values):
        raise BackendError(f'<Choices name="{name}"> lists a choice twice', where=CONFIG)
    return Control(name, to, value[1:], tuple(values), result)


# -- where a task's image lives -------------------------------------------------------------

@dataclass(frozen=True)
class ImageRef:
    """`disk`: a file under --images; `studio`: a path (and query) on Label Studio's origin,
    fetched with its token; `remote`: any other http(s) URL, fetched without it."""

    kind: str
    where: str  # a file path, an origin-relative path, or a URL
    stable: bool = False  # the same address always gives the same bytes (an upload)


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port), with the scheme's default port; a BackendError for anything but http(s)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise BackendError(f"{url!r} is not a URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendError(f"{url!r} is not an http(s) URL")
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def _under(root: Path, rel: str) -> Path | None:
    """root/rel when it names a regular file that stays inside root (no `..`, no absolute
    path outside it, no symlink out), else None."""
    p = PurePosixPath(rel.replace("\\", "/"))
    real = root.resolve()
    candidate = Path(p) if p.is_absolute() else real / p
    try:
        resolved = candidate.resolve()
        if real != resolved and real not in resolved.parents:
            return None
        return resolved if resolved.is_file() else None
    except (OSError, RuntimeError, ValueError):  # a name too long, a NUL: no such file
        return None


def locate(value: object, key: str, studio: str | None, images: Path | None, allow_remote: bool,
           task_id: object = None) -> ImageRef:
    """Where the image of one task is, or a BackendError saying why it cannot be read."""
    if not isinstance(value, str) or not value.strip():
        raise BackendError(f"the task has no image in data.{key}")
    value = value.strip()
    parts = urllib.parse.urlsplit(value)
    scheme, on_studio = parts.scheme.lower(), False
    if scheme in ("http", "https"):
        if studio is None or origin_of(value) != origin_of(studio):
            if allow_remote:
                return ImageRef("remote", value)
            raise BackendError(f"{value} is outside Label Studio ({studio or 'no --label-studio-url given'})",
                               hint="pass --allow-remote-images to fetch images from other hosts")
        value = urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))  # on the origin: as a path
        parts, scheme, on_studio = urllib.parse.urlsplit(value), "", True
    if scheme in ("s3", "gs", "azure-blob", "azure-spi"):
        if studio is None or not isinstance(task_id, int):
            raise BackendError(f"{value} is in cloud storage: Label Studio resolves it, and no --label-studio-url was given")
        uri = base64.urlsafe_b64encode(value.encode()).decode()
        return ImageRef("studio", f"/tasks/{task_id}/resolve/?fileuri={urllib.parse.quote(uri)}")
    if scheme and len(scheme) > 1:  # (a one-letter scheme is a Windows drive: a path)
        raise BackendError(f"{value}: {scheme}: addresses are not read", hint="serve images through Label Studio")
    if on_studio or value.startswith(SERVED):
        if value.startswith("/data/local-files/") and images is not None:
            d = urllib.parse.parse_qs(parts.query).get("d", [""])[0]
            found = _under(images, d) if d else None
            if found is not None:
                return ImageRef("disk", str(found))
        if studio is None:
            raise BackendError(f"{value} is served by Label Studio, and no --label-studio-url was given",
                               hint="pass --label-studio-url (or set LABEL_STUDIO_URL) and LABEL_STUDIO_API_KEY")
        return ImageRef("studio", value, value.startswith("/data/upload/"))
    if images is None:
        raise BackendError(f"{value} is a file path, and no --images folder was given",
                           hint="pass --images with the folder that holds the files")
    found = _under(images, value)
    if found is None:
        raise BackendError(f"{value} is not a file inside --images {images}")
    return ImageRef("disk", str(found))


# -- Label Studio's API ---------------------------------------------------------------------

def _is_jwt(token: str) -> bool:
    """A personal access token (a JWT refresh token) rather than a legacy token."""
    return token.count(".") == 2 and token.startswith("eyJ")


class _SameOrigin(urllib.request.HTTPRedirectHandler):
    """Redirects stay on Label Studio's origin; any other (a presigned cloud URL) is followed
    only with remote images allowed, and never with the token."""

    def __init__(self, origin: tuple[str, str, int], allow_remote: bool) -> None:
        self.origin, self.allow_remote = origin, allow_remote

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        try:
            same = origin_of(newurl) == self.origin
        except BackendError:
            same = False
        if not same:
            if not self.allow_remote:
                raise BackendError(f"Label Studio redirected to {newurl}, outside its origin",
                                   hint="pass --allow-remote-images to follow redirects to cloud storage")
            new.remove_header("Authorization")
        return new


class LabelStudio:
    """Label Studio's API at one origin, with a legacy token (`Token …`) or a personal access
    token (exchanged for a short-lived `Bearer` token, renewed when it expires)."""

    def __init__(self, url: str, token: str | None, allow_remote: bool = False, timeout: float = TIMEOUT) -> None:
        self.origin = origin_of(url)
        self.url = url.rstrip("/")
        self.token = token
        self.allow_remote = allow_remote
        self.timeout = timeout
        self._access: str | None = None
        self._lock = threading.Lock()
        self._opener = urllib.request.build_opener(_SameOrigin(self.origin, allow_remote))

    def _auth(self, renew: bool = False) -> dict[str, str]:
        if not self.token:
            return {}
        if not _is_jwt(self.token):
            return {"Authorization": f"Token {self.token}"}
        with self._lock:
            if self._access is None or renew:
                body = _read(self._opener, urllib.request.Request(
                    self.url + "/api/token/refresh", data=json.dumps({"refresh": self.token}).encode(),
                    headers={"Content-Type": "application/json"}, method="POST"), 1 << 20, "/api/token/refresh",
                             self.timeout)
                try:
                    self._access = json.loads(body)["access"]
                except (ValueError, KeyError, TypeError):
                    raise BackendError("Label Studio did not exchange the personal access token",
                                       where="/api/token/refresh", hint="check LABEL_STUDIO_API_KEY") from None
            return {"Authorization": f"Bearer {self._access}"}

    def get(self, path: str, limit: int) -> bytes:
        """GET a path (and query) on the origin, with the token; renews an expired access token once."""
        if not path.startswith("/"):
            raise BackendError(f"{path!r} is not a path on Label Studio")
        for renew in (False, True):
            request = urllib.request.Request(self.url + path, headers=self._auth(renew))
            try:
                return _read(self._opener, request, limit, path, self.timeout)
            except BackendError as e:
                if renew or not self.token or not _is_jwt(self.token) or "answered 401" not in e.message:
                    raise
        raise AssertionError("unreachable")

    def fetch(self, ref: ImageRef) -> bytes:
        """The bytes of an image Label Studio serves, or of a remote URL (no token sent)."""
        if ref.kind == "studio":
            return self.get(ref.where, MAX_IMAGE_BYTES)
        if ref.kind == "remote" and self.allow_remote:
            return fetch_remote(ref.where, self.timeout)
        raise BackendError(f"{ref.where} is not read through Label Studio")

    def export(self, project: int) -> list:
        """Every task of the project that has an annotation, as Label Studio's JSON export."""
        data = self.get(f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=false", MAX_EXPORT_BYTES)
        try:
            tasks = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise BackendError(f"the export is not JSON ({first_line(e)})", where=f"project {project}") from None
        if not isinstance(tasks, list):
            raise BackendError("the export is not a list of tasks", where=f"project {project}")
        return tasks


def _read(opener, request: urllib.request.Request, limit: int, shown: str, timeout: float) -> bytes:
    """The body of one request, at most `limit` bytes; any failure is one BackendError line."""
    try:
        with opener.open(request, timeout=timeout) as resp:
            data = resp.read(limit + 1)
    except BackendError:
        raise
    except urllib.error.HTTPError as e:
        hint = "check LABEL_STUDIO_API_KEY" if e.code in (401, 403) else None
        raise BackendError(f"answered {e.code} {e.reason}", where=shown, hint=hint) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise BackendError(f"cannot be reached: {first_line(reason) if isinstance(reason, BaseException) else reason}",
                           where=shown) from None
    if len(data) > limit:
        raise BackendError(f"more than {limit} bytes", where=shown)
    return data


def fetch_remote(url: str, timeout: float = TIMEOUT) -> bytes:
    """An http(s) image outside Label Studio (only with --allow-remote-images): no token."""
    opener = urllib.request.build_opener(_SameOrigin(("", "", 0), True))
    return _read(opener, urllib.request.Request(url), MAX_IMAGE_BYTES, url, timeout)


# -- annotations ----------------------------------------------------------------------------

@dataclass
class Annotated:
    """The tasks of a project with the class their annotation gives, and what was left out."""

    tasks: list[dict] = field(default_factory=list)   # each: the task (id, data) and "class"
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> tasks

    def skip(self, reason: str) -> None:
        self.left_out[reason] = self.left_out.get(reason, 0) + 1


def annotated(tasks: list, control: Control, names: list[str]) -> Annotated:
    """The class of each exported task: a ground-truth annotation wins, else the one updated
    last; cancelled (skipped) annotations and results for other controls do not count."""
    by_value = {nfc(v): n for n in names for v in (n, control.result_value.get(nfc(n), n))}
    out = Annotated()
    for task in tasks:
        if not isinstance(task, dict) or not isinstance(task.get("id"), int) or not isinstance(task.get("data"), dict):
            out.skip("not a task object")
            continue
        best, key = None, None
        for ann in task.get("annotations") or []:
            if not isinstance(ann, dict) or ann.get("was_cancelled") or not isinstance(ann.get("result"), list):
                continue
            for res in ann["result"]:
                if not isinstance(res, dict) or res.get("from_name") != control.from_name:
                    continue
                got = (res.get("value") or {}).get("choices") if isinstance(res.get("value"), dict) else None
                if isinstance(got, list) and got and isinstance(got[0], str):
                    rank = (bool(ann.get("ground_truth")), str(ann.get("updated_at") or ""), ann.get("id") or 0)
                    if key is None or rank > key:
                        best, key = got[0], rank
        if best is None:
            out.skip("no choice for this control (skipped, or another control)")
            continue
        cls = by_value.get(nfc(best))
        if cls is None:
            out.skip("a choice that is not one of the classes")
            continue
        out.tasks.append({"id": task["id"], "data": task["data"], "class": cls})
    return out


def env_token() -> str | None:
    """LABEL_STUDIO_API_KEY (the SDK's name), or LABEL_STUDIO_ACCESS_TOKEN."""
    return os.environ.get("LABEL_STUDIO_API_KEY") or os.environ.get("LABEL_STUDIO_ACCESS_TOKEN") or None
