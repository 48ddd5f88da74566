"""`python -m app keys add --id ID --role infer|admin [--models a,b] [--file PATH]`: make a new random key.

It prints the key once (it is stored nowhere) and the `[[key]]` table of SERVE_API_KEYS_FILE with its
SHA-256; with `--file`, the table is appended to that file instead of printed (a running server picks it up
within about a second). The entry is checked as the server would check it, and
an id already in the file is refused, before anything is written.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from app.dataplane.keys import KeyEntry, KeysFileError, Role, read_keys_file


def _table(entry: KeyEntry) -> str:
    lines = ["[[key]]", f'id = "{entry.id}"', f'sha256 = "{entry.sha256}"', f'role = "{entry.role.value}"']
    if entry.models is not None:
        lines.append("models = [" + ", ".join(f'"{model}"' for model in entry.models) + "]")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app keys", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="make a new key and its [[key]] table")
    add.add_argument("--id", required=True, help="the key's id, shown in logs and error messages")
    add.add_argument("--role", required=True, choices=[role.value for role in Role])
    add.add_argument("--models", help="comma-separated models the key may use; all models when absent")
    add.add_argument("--file", type=Path, help="append the table to this keys file instead of printing it")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the command; the exit status (2 for a refused argument or keys file)."""
    arguments = _parser().parse_args(argv)
    key = secrets.token_urlsafe(32)
    models = ([model.strip() for model in arguments.models.split(",") if model.strip()]
              if arguments.models is not None else None)
    try:
        entry = KeyEntry(id=arguments.id, sha256=hashlib.sha256(key.encode()).hexdigest(), role=arguments.role,
                         models=models)
        if arguments.file is not None:
            existing = read_keys_file(arguments.file) if arguments.file.exists() else ()
            if any(known.id == entry.id for known in existing):
                raise KeysFileError(f"{arguments.file}: key id {entry.id!r} is already there")
    except ValidationError as exc:
        problems = "; ".join(f"--{error['loc'][0]}: {error['msg']}" for error in exc.errors())
        print(f"python -m app keys: {problems}", file=sys.stderr)
        return 2
    except KeysFileError as exc:
        print(f"python -m app keys: {exc}", file=sys.stderr)
        return 2
    print(f"key {entry.id}: {key}\n(shown once: give it to the client, it is stored nowhere)")
    if arguments.file is None:
        print(f"\nAppend to SERVE_API_KEYS_FILE:\n\n{_table(entry)}", end="")
        return 0
    text = arguments.file.read_text(encoding="utf-8") if arguments.file.exists() else ""
    separator = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    with arguments.file.open("a", encoding="utf-8") as out:
        out.write(separator + _table(entry))
    print(f"appended [[key]] {entry.id} to {arguments.file}")
    return 0
