"""review backend: a Label Studio ML backend that pre-labels each task with a class and
learns from every annotation (clipdata/server/backend.py). Rules: formats/labelstudio-backend.md."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..captions import DEFAULT_TEMPLATE
from ..classes import classes_and_training
from ..embedding.spec import EngineSpec
from ..errors import ClipdataError, OptionError

INSTALL_HINT = "pip install 'clipdata[labelstudio]'"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
log = logging.getLogger("clipdata.backend")


def review_backend(classes: str | list[str] | None = None, *, ontology: str | Path | None = None,
                   from_layout: str | Path | None = None, template: str = DEFAULT_TEMPLATE,
                   spec: EngineSpec = EngineSpec(), host: str = "127.0.0.1", port: int = 9090,
                   label_studio_url: str | None = None, api_key: str | None = None,
                   images: str | Path | None = None, allow_remote_images: bool = False,
                   train_from: str | Path | None = None, folds: int = 5,
                   cache_dir: str | Path | None | bool = None,
                   auth_user: str | None = None, auth_password: str | None = None,
                   allow_hosts: tuple[str, ...] | list[str] = ()):
    """Start the backend on `host:port` (0: a free port) and return the running server
    (`.url` for Label Studio's "Add model", `.stop()`, `.learner.status()`).

    Images and annotations are read through Label Studio's API at `label_studio_url`
    (default $LABEL_STUDIO_URL) with `api_key` (default $LABEL_STUDIO_API_KEY), or from disk
    under `images`; never from another host unless `allow_remote_images`. Basic auth with
    `auth_user`/`auth_password` (default $BASIC_AUTH_USER/$BASIC_AUTH_PASS). With
    `train_from` (a labeled CLIP layout) its images are learnt from too. Embeddings go
    through the cache (`cache_dir`: None the default cache, False none). It answers only to
    requests whose Host names it: 127.0.0.1, localhost, `host` and `allow_hosts` (the name
    Label Studio reaches it by, e.g. host.docker.internal)."""
    try:
        import jsonschema  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ClipdataError(f"review backend needs starlette, uvicorn and jsonschema ({e.name} is not installed)",
                            hint=INSTALL_HINT) from None
    from ..server.backend import start_backend
    from ..server.labelstudio import LabelStudio, env_token, origin_of
    from ..server.learner import Learner

    cls, train = classes_and_training(classes, ontology, from_layout, template, train_from)
    if folds < 2:
        raise OptionError(f"--folds {folds}: cross-validation needs at least 2")
    url = label_studio_url or os.environ.get("LABEL_STUDIO_URL") or None
    if url:
        try:
            origin_of(url)
        except ClipdataError as e:
            raise OptionError(f"--label-studio-url {url!r} is not an http(s) URL",
                              hint="e.g. --label-studio-url http://localhost:8080") from e
    root = Path(images) if images is not None else None
    if root is not None and not root.is_dir():
        raise OptionError(f"--images {images}: not a folder")
    if url is None and root is None and not allow_remote_images:
        raise OptionError("the backend could read no image: give --label-studio-url (or set LABEL_STUDIO_URL), "
                          "or --images with the folder the tasks name",
                          hint="e.g. --label-studio-url http://localhost:8080 with LABEL_STUDIO_API_KEY set")
    user = auth_user if auth_user is not None else os.environ.get("BASIC_AUTH_USER")
    password = auth_password if auth_password is not None else os.environ.get("BASIC_AUTH_PASS")
    if bool(user) != bool(password):
        raise OptionError("basic auth needs both a user and a password",
                          hint="--auth-user and --auth-password (or BASIC_AUTH_USER and BASIC_AUTH_PASS)")
    studio = LabelStudio(url, api_key or env_token(), allow_remote_images) if url else None
    learner = Learner(cls, spec, cache_dir=cache_dir, studio=studio, images=root,
                      allow_remote=allow_remote_images, train=train, folds=folds)
    if studio is None:
        log.warning("no Label Studio URL: images are read from --images only, and nothing is learnt")
    elif studio.token is None:
        log.warning("no LABEL_STUDIO_API_KEY: Label Studio's own token from /setup is used for its API")
    return start_backend(learner, host=host, port=port, auth=(user, password) if user else None,
                         allow_hosts=allow_hosts)
