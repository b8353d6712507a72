"""Registry credentials in containers-auth.json, the file podman, skopeo and buildah share.

`capsactl login` checks a user and password against the registry and stores them here;
`pull`, `push` and `run` use them when no `--creds` is given; `logout` removes them. The file
(containers-auth.json(5)): {"auths": {"KEY": {"auth": base64("user:password")}}}, where KEY is
a registry ("127.0.0.1:5000") or a registry and a repository path ("quay.io/me/app"), the most
specific key matching an image winning.

Where, as podman: `--authfile`, else $REGISTRY_AUTH_FILE, else /run/containers/0/auth.json for
root and $XDG_RUNTIME_DIR/containers/auth.json for anyone else; reading falls back to
~/.config/containers/auth.json and docker's ~/.docker/config.json. Written atomically, mode 0600:
it holds passwords.
"""

from __future__ import annotations

import base64
import json
import os

from capsa.manager.errors import ManagerError

DOCKER_HUB_KEYS = ("docker.io", "registry-1.docker.io", "index.docker.io", "https://index.docker.io/v1/")


class AuthError(ManagerError):
    pass


def default_path() -> str:
    """The file `login` writes when no --authfile is given."""
    if os.environ.get("REGISTRY_AUTH_FILE"):
        return os.environ["REGISTRY_AUTH_FILE"]
    if os.geteuid() == 0:
        return "/run/containers/0/auth.json"
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return os.path.join(runtime_dir, "containers", "auth.json")
    return os.path.expanduser("~/.config/containers/auth.json")


def read_paths(authfile: str | None) -> list[str]:
    """The files credentials are looked up in, first match wins."""
    if authfile:
        return [authfile]
    return list(dict.fromkeys([default_path(), os.path.expanduser("~/.config/containers/auth.json"),
                               os.path.expanduser("~/.docker/config.json")]))


def lookup(registry: str, repository: str | None = None, authfile: str | None = None) -> tuple[str, str] | None:
    """The (user, password) stored for an image of `registry`/`repository`, or None."""
    keys = candidate_keys(registry, repository)
    for path in read_paths(authfile):
        auths = _read(path, must_exist=bool(authfile))
        for key in keys:
            entry = auths.get(key)
            if isinstance(entry, dict) and entry.get("auth"):
                return decode(entry["auth"], path, key)
    return None


def candidate_keys(registry: str, repository: str | None) -> list[str]:
    """Keys that match an image, most specific first: registry/a/b, registry/a, registry."""
    keys = []
    parts = (repository or "").split("/") if repository else []
    for n in range(len(parts), 0, -1):
        keys.append(registry + "/" + "/".join(parts[:n]))
    keys.append(registry)
    if registry in DOCKER_HUB_KEYS:
        keys += [k for k in DOCKER_HUB_KEYS if k != registry]
    return keys


def decode(auth: str, path: str, key: str) -> tuple[str, str]:
    try:
        user, colon, password = base64.b64decode(auth, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise AuthError(f"{path}: the credentials of {key!r} are not base64 of user:password") from None
    if not colon:
        raise AuthError(f"{path}: the credentials of {key!r} are not user:password")
    return user, password


def store(key: str, user: str, password: str, authfile: str | None = None) -> str:
    """Record user:password for `key` (a registry, or registry/repository); return the file."""
    path = authfile or default_path()
    auths = _read(path, must_exist=False)
    auths[key] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    _write(path, auths)
    return path


def remove(key: str, authfile: str | None = None) -> bool:
    """Forget `key`'s credentials; False when there were none."""
    path = authfile or default_path()
    auths = _read(path, must_exist=False)
    if key not in auths:
        return False
    del auths[key]
    _write(path, auths)
    return True


def remove_all(authfile: str | None = None) -> None:
    path = authfile or default_path()
    if os.path.exists(path):
        _write(path, {})


def _read(path: str, must_exist: bool) -> dict:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read() or b"{}")
    except FileNotFoundError:
        if must_exist:
            raise AuthError(f"the auth file {path} does not exist") from None
        return {}
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise AuthError(f"cannot read the auth file {path}: {getattr(err, 'strerror', None) or err}") from None
    auths = data.get("auths") if isinstance(data, dict) else None
    if auths is None:
        return {}
    if not isinstance(auths, dict):
        raise AuthError(f"the auth file {path}: \"auths\" is not an object")
    return auths


def _write(path: str, auths: dict) -> None:
    """Replace the file atomically (a reader sees the old or the new one), keeping its other keys."""
    try:
        with open(path, "rb") as f:
            whole = json.loads(f.read() or b"{}")
        if not isinstance(whole, dict):
            whole = {}
    except (OSError, ValueError, UnicodeDecodeError):
        whole = {}
    whole["auths"] = auths
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(whole, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as err:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise AuthError(f"cannot write the auth file {path}: {err.strerror or err}") from None
