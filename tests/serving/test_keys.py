"""Keys with roles and model scopes from SERVE_API_KEYS_FILE, the `python -m app keys add` command, and the file
re-read while the server runs (rotation with no restart and no failed request)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import StartServer
from .support import ModelUnderTest, ServerProcess, assert_json_error, b64, exit_status

ENV_KEY = "env-key-7d2e"
KEYS = {"photos": "photos-key-1a", "reviews": "reviews-key-2b", "text-ops": "text-ops-key-3c", "root": "root-key-4d"}


def table(key_id: str, key: str, role: str, models: list[str] | None = None, extra: str = "") -> str:
    lines = ["[[key]]", f'id = "{key_id}"', f'sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"',
             f'role = "{role}"']
    if models is not None:
        lines.append("models = [" + ", ".join(f'"{model}"' for model in models) + "]")
    return "\n".join(lines) + "\n" + extra + "\n"


def replace_file(path: Path, text: str) -> None:
    """Write a temporary file beside `path` and rename it over `path`, as a secret update does."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@pytest.fixture(scope="module")
def scoped_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, image_model: ModelUnderTest,
                  text_model: ModelUnderTest) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("scoped")
    keys_file = workdir / "keys.toml"
    keys_file.write_text(
        table("photos", KEYS["photos"], "infer", [image_model.name], "rate_per_s = 5\nburst = 10\nmax_in_flight = 4")
        + table("reviews", KEYS["reviews"], "infer", [text_model.name])
        + table("text-ops", KEYS["text-ops"], "admin", [text_model.name])
        + table("root", KEYS["root"], "admin"))
    process = ServerProcess(models_dir, workdir, {
        "SERVE_MODELS": f"{image_model.name},{text_model.name}", "SERVE_API_KEYS_FILE": str(keys_file),
        "SERVE_API_KEY": ENV_KEY})
    process.start().wait_ready()
    yield process
    process.stop()


def as_key(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


def assert_403(response: httpx.Response, *named: str) -> None:
    body = assert_json_error(response, 403, "forbidden")
    for part in named:
        assert part in body["error"], body
    assert not any(key in response.text for key in (*KEYS.values(), ENV_KEY)), response.text


def test_infer_key_cannot_load_or_unload(scoped_server: ServerProcess, image_model: ModelUnderTest) -> None:
    with scoped_server.client() as client:
        for action in ("load", "unload"):
            response = client.post(f"/v2/repository/models/{image_model.name}/{action}", headers=as_key("photos"))
            assert_403(response, "'photos'", "role infer", image_model.name, "admin")
        assert client.get(f"/v2/models/{image_model.name}/ready").status_code == 200


@pytest.mark.parametrize("key", [KEYS["root"], ENV_KEY], ids=["file-admin", "env-key-is-admin"])
def test_admin_key_loads(scoped_server: ServerProcess, text_model: ModelUnderTest, key: str) -> None:
    with scoped_server.client() as client:
        response = client.post(f"/v2/repository/models/{text_model.name}/load", headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        assert response.json()["name"] == text_model.name


def test_admin_key_scoped_to_other_models(scoped_server: ServerProcess, image_model: ModelUnderTest,
                                          text_model: ModelUnderTest) -> None:
    with scoped_server.client(headers=as_key("text-ops")) as client:
        assert_403(client.post(f"/v2/repository/models/{image_model.name}/unload"), "'text-ops'", image_model.name,
                   f"models {text_model.name}")
        assert client.get(f"/v2/models/{image_model.name}/ready").status_code == 200


def test_scoped_key_reaches_only_its_models(scoped_server: ServerProcess, image_model: ModelUnderTest,
                                            text_model: ModelUnderTest, digits: list[bytes],
                                            reviews: list[str]) -> None:
    infer = {"inputs": [{"name": "pixel_values", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}
    with scoped_server.client(headers=as_key("reviews")) as client:
        # No model named: the image default is chosen, and it is outside the scope.
        assert_403(client.post("/predict", json={"image": b64(digits[0])}), "'reviews'", image_model.name)
        assert_403(client.post(f"/predict?model={image_model.name}", files={"file": ("d.png", digits[0])}),
                   image_model.name)
        for path in (f"/v2/models/{image_model.name}", f"/v2/models/{image_model.name}/config"):
            assert_403(client.get(path), image_model.name)
        assert_403(client.post(f"/v2/models/{image_model.name}/infer", json=infer), image_model.name)
        assert client.post("/predict", json={"text": reviews[0]}).status_code == 200
        assert client.get(f"/v2/models/{text_model.name}").status_code == 200
        listed = {item["name"] for item in client.get("/models").json()["models"]}
        assert listed == {image_model.name, text_model.name}  # /models lists every model, whatever the scope
    with scoped_server.client(headers=as_key("photos")) as client:
        assert client.post("/predict", json={"image": b64(digits[0])}).status_code == 200
        assert client.post(f"/v2/models/{image_model.name}/infer", json=infer).status_code == 200
        assert_403(client.post("/predict", json={"text": reviews[0]}), text_model.name)


def test_wrong_key_is_still_401(scoped_server: ServerProcess) -> None:
    with scoped_server.client() as client:
        for headers in ({}, {"X-API-Key": "photos"}, {"X-API-Key": hashlib.sha256(KEYS["root"].encode()).hexdigest()}):
            response = client.get("/models", headers=headers)
            assert_json_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer realm="), response.headers


def keys_add(*arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m app keys add ARGUMENTS`, run from the repository root."""
    return subprocess.run([sys.executable, "-m", "app", "keys", "add", *arguments], check=False,
                          capture_output=True, text=True, timeout=30, cwd=Path(__file__).resolve().parents[2])


def add_key(keys_file: Path, key_id: str, *options: str) -> str:
    """`python -m app keys add --file keys_file`: the key it printed."""
    done = keys_add("--id", key_id, *options, "--file", str(keys_file))
    assert done.returncode == 0, done
    printed = [line for line in done.stdout.splitlines() if line.startswith(f"key {key_id}: ")]
    assert len(printed) == 1, done.stdout
    key = printed[0].split(": ", 1)[1]
    assert key not in keys_file.read_text()
    return key


def test_keys_add_command(tmp_path: Path) -> None:
    from app.dataplane.keys import Role, read_keys_file

    keys_file = tmp_path / "keys.toml"
    first = add_key(keys_file, "photos-app", "--role", "infer", "--models", "a,b")
    second = add_key(keys_file, "ops", "--role", "admin")
    keys = {key.id: key for key in read_keys_file(keys_file)}
    assert keys["photos-app"].digest == hashlib.sha256(first.encode()).digest()
    assert keys["photos-app"].role is Role.INFER and keys["photos-app"].models == {"a", "b"}
    assert keys["ops"].digest == hashlib.sha256(second.encode()).digest() and keys["ops"].models is None
    before = keys_file.read_text()
    for arguments in (["--id", "ops", "--role", "admin", "--file", str(keys_file)], ["--id", "x", "--role", "root"],
                      ["--id", "bad id", "--role", "infer"], ["--id", "x", "--role", "infer", "--models", ""]):
        refused = keys_add(*arguments)
        assert refused.returncode == 2 and refused.stderr.strip(), (arguments, refused)
    assert keys_file.read_text() == before
    printed = keys_add("--id", "p", "--role", "infer")
    assert printed.returncode == 0 and '[[key]]\nid = "p"\n' in printed.stdout, printed


@pytest.mark.parametrize("workers", [1, 2])
def test_rotation_without_restart(start_server: StartServer, models_dir: Path, image_model: ModelUnderTest,
                                  tmp_path: Path, workers: int) -> None:
    """The file replaced under a running server: the new key works and the removed one gets 401 within a few
    seconds in every worker, a key in both sets never fails; a malformed file keeps the keys and says why."""
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(table("old", "old-key-5e", "infer") + table("kept", "kept-key-6f", "infer"))
    server = start_server(models_dir, SERVE_MODELS=image_model.name, SERVE_API_KEYS_FILE=str(keys_file),
                          SERVE_WORKERS=str(workers))
    server.wait_ready()
    path = f"/v2/models/{image_model.name}"

    def status(key: str) -> int:
        # A new connection each time, so the requests spread over the workers.
        return httpx.get(server.url + path, headers={"X-API-Key": key, "Connection": "close"}, timeout=10).status_code

    kept_statuses: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            kept_statuses.append(status("kept-key-6f"))

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        assert status("old-key-5e") == 200
        rotated = keys_file.parent / "next.toml"
        rotated.write_text(table("kept", "kept-key-6f", "infer"))
        new_key = add_key(rotated, "new", "--role", "infer")
        assert status(new_key) == 401
        os.replace(rotated, keys_file)
        changed = time.monotonic()
        server.wait_for(lambda client: status(new_key) == 200 and status("old-key-5e") == 401, 10,
                        what="the rotated keys to take effect")
        time.sleep(max(0.0, changed + 2.5 - time.monotonic()))  # every worker has looked at the file by now
        assert [status(new_key) for _ in range(12)] == [200] * 12
        assert [status("old-key-5e") for _ in range(12)] == [401] * 12
        replace_file(keys_file, table("kept", "kept-key-6f", "infer") + 'role = "root"\n')
        time.sleep(2.5)
        assert [status(new_key) for _ in range(12)] == [200] * 12
        assert [status("old-key-5e") for _ in range(12)] == [401] * 12
    finally:
        stop.set()
        asker.join()
    assert kept_statuses and set(kept_statuses) == {200}, sorted(set(kept_statuses))
    log = server.log()
    errors = [line for line in log.splitlines() if "keys file not reloaded" in line]
    assert errors and all("ERROR" in line and "SERVE_API_KEYS_FILE" in line for line in errors), log
    assert len(errors) <= workers, errors  # one line per process, per change
    assert not any(key in log for key in ("kept-key-6f", "old-key-5e", new_key))


@pytest.mark.parametrize(("entries", "named"), [
    (table("a", "k1", "infer") + table("a", "k2", "infer"), "key id 'a' appears twice"),
    (table("a", "k1", "infer") + table("b", "k1", "admin"), "keys 'a' and 'b' have the same sha256"),
    (table("a", "k1", "reader"), "[[key]] #1 (id 'a') field role"),
    (table("a", "k1", "infer", extra="colour = \"red\""), "[[key]] #1 (id 'a') field colour"),
    (table("a", "k1", "infer", extra="burst = 0"), "[[key]] #1 (id 'a') field burst"),
    (table("a", "k1", "infer", extra="burst = 3"), "[[key]] #1 (id 'a'): Value error, burst needs rate_per_s"),
    ('[[key]]\nid = "a"\nsha256 = "00ff"\nrole = "infer"\n', "[[key]] #1 (id 'a') field sha256"),
    ("[[key]\n", "cannot read it"),
], ids=["duplicate-id", "duplicate-hash", "unknown-role", "unknown-field", "zero-burst", "burst-without-rate",
      "short-hex", "not-toml"])
def test_malformed_keys_file_fails_startup(models_dir: Path, image_model: ModelUnderTest, tmp_path: Path,
                                           entries: str, named: str) -> None:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(entries)
    status, log = exit_status(models_dir, tmp_path, SERVE_MODELS=image_model.name,
                              SERVE_API_KEYS_FILE=str(keys_file))
    assert status != 0, log
    assert named in log, log
    assert "k1" not in log.replace(str(tmp_path), "")


def test_closed_health_needs_a_key_the_health_check_can_send(models_dir: Path, tmp_path: Path) -> None:
    """A keys file holds only hashes, so closing the health routes with no plain key would leave the
    container's health check unable to pass: refused at start-up, saying what to set."""
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(table("root", KEYS["root"], "admin"))
    status, log = exit_status(models_dir, tmp_path / "server", SERVE_API_KEYS_FILE=str(keys_file),
                              SERVE_PUBLIC_HEALTH="false")
    assert status != 0, log
    assert "SERVE_PUBLIC_HEALTH=false needs SERVE_API_KEY or SERVE_API_KEYS" in log, log


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_rereads_the_keys_file_in_every_worker(start_server: StartServer, models_dir: Path,
                                                      image_model: ModelUnderTest, tmp_path: Path,
                                                      workers: int) -> None:
    """A change the once-a-second look cannot see (rewritten in place, same size, modification time put back)
    takes effect on SIGHUP, in every worker, which goes on serving (not replaced, as uvicorn's supervisor
    would by default)."""
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(table("app", "first-key-7g", "infer"))
    server = start_server(models_dir, SERVE_MODELS=image_model.name, SERVE_API_KEYS_FILE=str(keys_file),
                          SERVE_WORKERS=str(workers)).wait_ready()
    path = f"/v2/models/{image_model.name}"

    def statuses(key: str) -> list[int]:
        # A new connection each time, so the requests spread over the workers.
        return [httpx.get(server.url + path, headers={"X-API-Key": key, "Connection": "close"},
                          timeout=10).status_code for _ in range(12)]

    assert statuses("first-key-7g") == [200] * 12
    with server.client() as client:
        pids = client.get("/health").json().get("workers")
    before = os.stat(keys_file)
    with keys_file.open("r+") as rewritten:  # same inode, same size
        rewritten.write(table("app", "other-key-8h", "infer"))
    os.utime(keys_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    time.sleep(2.5)  # every worker has looked at the file, and seen no change
    assert statuses("other-key-8h") == [401] * 12
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)
    server.wait_for(lambda client: statuses("other-key-8h") == [200] * 12, 10, what="SIGHUP to take effect")
    assert statuses("first-key-7g") == [401] * 12
    assert server.process.poll() is None
    with server.client() as client:
        assert client.get("/health").json().get("workers") == pids
