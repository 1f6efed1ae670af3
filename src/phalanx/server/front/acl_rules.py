"""ACL command and key rules (https://redis.io/docs/management/security/acl/): which
commands and keys a user created by ACL SETUSER may use.

What lives here: `parse_command_rule` / `parse_key_rule` (SETUSER's validation and the stored
form), `command_allowed`, `keys_allowed`, `refusal` (the -NOPERM text, or None) and
`summary` (the coarse "all" / "read" level older code reads).

Rules of this file:
- A user's command rules are kept in order (`UserInfo.commands`: "+@all", "-@all", "+@read",
  "+get", "-set", "+client|id", ...); a command is allowed when the LAST rule that matches it
  allows it (Redis's bitmap semantics: each rule sets or clears the bits of what it names;
  "+cmd" covers every subcommand, "+cmd|sub" one). A user with no command rules (the config
  file's users, maps written before command rules existed) has the two levels "all" / "read".
- Key patterns (`UserInfo.keys`): "~p" (read and write), "%R~p", "%W~p", "%RW~p"; a read
  command's keys need R, a write's need W (phalanx decides per command, where Redis 7 decides
  per key spec: a write command that also reads, such as LMOVE's source, needs W only). A
  user in rules mode with no pattern may touch no key; a legacy user every key.
- Channels are always all (`&*`).
- Pure: no IO; the session calls `refusal` for every command of a user in rules mode.
See docs/architecture.md and front/acl.py (where users live).
"""

from __future__ import annotations

from phalanx.errors import CommandError
from phalanx.kv import COMMAND_SPECS, command_spec, is_known, is_write
from phalanx.kv.glob import glob_match
from phalanx.placement import command_keys


def _categories() -> set[str]:
    return {category.lstrip("@").lower() for spec in COMMAND_SPECS.values()
            for category in spec.acl_categories} | {"all"}


_UNKNOWN = "Unknown command or category name in ACL"


def parse_command_rule(rule: str) -> str | None:
    """The stored form of a command rule ("+get", "-@write", "+client|id"), None if `rule` is
    not one; CommandError with Redis's text for an unknown command or category."""
    lower = rule.lower()
    if lower == "allcommands":
        return "+@all"
    if lower == "nocommands":
        return "-@all"
    if len(lower) < 2 or lower[0] not in "+-":
        return None
    body = lower[1:]
    if body.startswith("@"):
        if body[1:] not in _categories():
            raise CommandError(f"ERR Error in ACL SETUSER modifier '{rule}': {_UNKNOWN}")
        return lower
    name, _, sub = body.partition("|")
    spec = COMMAND_SPECS.get(name.upper().encode())
    if spec is None or (sub and not sub.strip()):
        raise CommandError(f"ERR Error in ACL SETUSER modifier '{rule}': {_UNKNOWN}")
    return lower


def parse_key_rule(rule: str) -> str | None:
    """The stored form of a key pattern rule ("~p", "%R~p", ...), None if not one."""
    if rule.lower() == "allkeys":
        return "~*"
    if rule.startswith("~") and len(rule) > 1:
        return rule
    if rule.startswith("%") and "~" in rule:
        permission, _, pattern = rule[1:].partition("~")
        if pattern and permission.upper() in ("R", "W", "RW", "WR"):
            return f"%{permission.upper()}~{pattern}"
        raise CommandError(f"ERR Error in ACL SETUSER modifier '{rule}': Syntax error")
    return None


def command_allowed(rules: tuple[str, ...], name: bytes, arguments: list[bytes]) -> bool:
    """The last matching rule decides (see the module rules)."""
    spec = command_spec(name)
    lowered = name.decode(errors="replace").lower()
    categories = {c.lstrip("@").lower() for c in spec.acl_categories} if spec else set()
    sub = arguments[1].decode(errors="replace").lower() if len(arguments) > 1 else ""
    allowed = False
    for rule in rules:
        body = rule[1:]
        if body.startswith("@"):
            matches = body == "@all" or body[1:] in categories
        elif "|" in body:
            command, _, wanted = body.partition("|")
            matches = command == lowered and wanted == sub
        else:
            matches = body == lowered
        if matches:
            allowed = rule[0] == "+"
    return allowed


def keys_allowed(patterns: tuple[str, ...], keys: list[bytes], write: bool) -> bytes | None:
    """The first key no pattern grants (R for a read, W for a write), or None."""
    needed = "W" if write else "R"
    for key in keys:
        granted = False
        for rule in patterns:
            if rule.startswith("~"):
                permission, pattern = "RW", rule[1:]
            else:
                permission, _, pattern = rule[1:].partition("~")
            if needed in permission and glob_match(pattern.encode(), key):
                granted = True
                break
        if not granted:
            return key
    return None


def refusal(user: str, rules: tuple[str, ...], patterns: tuple[str, ...], name: bytes,
            arguments: list[bytes], dry_run: bool = False) -> str | None:
    """Why user `user` may not run this command (-NOPERM text, or ACL DRYRUN's line), or
    None when it may."""
    command = name.decode(errors="replace").lower()
    if not command_allowed(rules, name, arguments):
        if dry_run:
            return f"This user has no permissions to run the '{command}' command"
        return f"NOPERM User {user} has no permissions to run the '{command}' command"
    if is_known(name):
        keys = command_keys(name, arguments[1:])
        if keys:
            denied = keys_allowed(patterns, keys, is_write(name))
            if denied is not None:
                shown = denied.decode(errors="replace")
                if dry_run:
                    return f"This user has no permissions to access the '{shown}' key"
                return "NOPERM No permissions to access a key"
    return None


def summary(rules: tuple[str, ...]) -> str:
    """"all" when the rules allow every command, else "read" (the level older checks read:
    ACL administration, FAILOVER, internal commands need "all")."""
    every = all(command_allowed(rules, spec.name.upper().encode(), [])
                for spec in COMMAND_SPECS.values())
    return "all" if every else "read"
