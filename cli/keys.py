"""``stella-sched keys generate|show``: Ed25519 signing keys for the signed-events topic."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.output import EXIT_OK, CliError, UsageError, print_json, print_table

PRIVATE_SUFFIX = ".key"  # not *.json: a public-key folder (load_public_keys) must never hold it
PUBLIC_SUFFIX = ".pub.json"


def generate(args: argparse.Namespace) -> int:
    from signing.keys import generate_keypair

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    private = out / f"{args.name}{PRIVATE_SUFFIX}"
    public = out / f"{args.name}{PUBLIC_SUFFIX}"
    existing = [str(p) for p in (private, public) if p.exists()]
    if existing and not args.force:
        raise CliError(f"{', '.join(existing)} already exist(s); pick another --name or pass --force")
    key = generate_keypair(private, public)
    if args.json:
        print_json({"keyid": key.keyid, "private_key_file": str(private), "public_key_file": str(public)})
    else:
        sys.stdout.write(
            f"keyid:        {key.keyid}\n"
            f"private key:  {private}  (mode 0600; give it to the signer via STELLA_SIGNING_KEY_FILE)\n"
            f"public key:   {public}  (give it to verifiers: --public-keys / STELLA_PUBLIC_KEYS)\n"
        )
    return EXIT_OK


def show(args: argparse.Namespace) -> int:
    from signing.keys import KeyFileError, load_public_keys

    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    try:
        keys = load_public_keys(path)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    if not keys:
        raise CliError(f"{path}: no public keys found (expected *.json key documents)")
    if args.json:
        print_json({"keys": [{"keyid": k, "algorithm": "ed25519"} for k in sorted(keys)]})
    else:
        print_table(["keyid", "algorithm"], [(k, "ed25519") for k in sorted(keys)])
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return generate(args) if args.keys_command == "generate" else show(args)
