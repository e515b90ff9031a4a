"""`enoc passwd`: print an argon2id password hash for the collector's users file.

The password is read from the terminal (twice) or, with `--stdin`, from the
first line of standard input, so it never appears in shell history or `ps`.
"""

from __future__ import annotations

import argparse
import getpass
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stdin", action="store_true", help="read the password from standard input"
    )


def run(args: argparse.Namespace) -> int:
    from collector.auth import hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("enoc passwd: the passwords differ", file=sys.stderr)
            return 2
    if len(password) < 12:
        print("enoc passwd: use at least 12 characters", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0
