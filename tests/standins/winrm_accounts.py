"""Local accounts and groups of the WinRM stand-in (winrm_standin.py), for
reimage's `grant` and `revoke`. A STAND-IN, for tests only: no Windows runs
here.

What it simulates, from Microsoft's documentation:
- the ADSI WinNT provider: IADsContainer::Create("user", NAME) on
  WinNT://COMPUTER,computer makes a local account that exists once
  IADs::SetInfo commits it; IADsUser::SetPassword sets its password;
  IADsUser.AccountDisabled disables it; IADsContainer::Delete("user",
  NAME) deletes it; IADsGroup::Add / Remove / IsMember take the member's
  ADsPath (WinNT://COMPUTER/NAME) ("ADSI WinNT Provider", "IADsGroup
  interface", "IADsContainer::Create", "IADsUser::SetPassword");
- WMI's Win32_Group class: one instance per local group, with its Name
  (in the install's language) and SID, LocalAccount TRUE ("Win32_Group
  class");
- the well-known SIDs of the built-in groups: S-1-5-32-544 Administrators,
  S-1-5-32-555 Remote Desktop Users ("Well-known SIDs", "Well-known
  security identifiers in Windows operating systems"); with --locale de-DE
  their names are Administratoren and Remotedesktopbenutzer, the SIDs the
  same;
- query session USER / logoff ID (the qwinsta and logoff command
  references): the user's sessions end. Here a session is a WinRM shell
  the user opened (the stand-in's only kind of logon), and it ends: its
  next request is refused.

reimage's VBScripts (src/os/windows/grant-user.vbs, revoke-user.vbs) are
recognized by what they call, as winrm_standin.py does for its other
scripts, and their effect is applied to the machine's state: accounts
(name -> password, the machine's login table, so the granted user can log
in with the password from its file), groups by SID with their members,
disabled accounts, and every logoff. The state survives between calls and
is dumped with the rest of the machine's (`groups`, `disabled_accounts`,
`logoffs`).
"""

import re

GRANT_SCRIPT = [
    re.compile(r'(?i)GetObject\(\s*"WinNT://\.,computer"\s*\)\.Create\(\s*"user"'),
    re.compile(r"(?i)\.SetPassword\b"),
    re.compile(r"(?i)FROM\s+Win32_Group\s+WHERE\s+LocalAccount\s*=\s*TRUE\s+AND\s+SID\s*="),
    re.compile(r"(?i)\.IsMember\("),
    re.compile(r"(?i)\.DeleteFile\b"),
]
REVOKE_SCRIPT = [
    re.compile(r'(?i)\.Delete\s+"user"'),
    re.compile(r"(?i)AccountDisabled\s*=\s*True"),
    re.compile(r'(?i)"query session "'),
    re.compile(r'(?i)"logoff "'),
]

ADMINS, RDP_USERS = "S-1-5-32-544", "S-1-5-32-555"


def groups(m):
    """The machine's local groups by SID, made on first use: Windows' own,
    named in the install's language; Administrator in Administrators."""
    if not hasattr(m, "groups"):
        de = m.cfg.locale.lower().startswith("de")
        m.groups = {
            ADMINS: {"name": "Administratoren" if de else "Administrators", "members": ["Administrator"]},
            RDP_USERS: {"name": "Remotedesktopbenutzer" if de else "Remote Desktop Users", "members": []},
        }
        m.disabled_accounts = []
        m.logoffs = []
        m.made_by_grant = []  # the accounts whose Description is reimage's
    return m.groups


def dump(m):
    """The part of the state file this module keeps."""
    g = groups(m)
    return {"groups": g, "disabled_accounts": m.disabled_accounts, "logoffs": m.logoffs,
            "made_by_grant": m.made_by_grant}


def account(m, user):
    """The account's name as the machine spells it, or None."""
    hit = [u for u in m.accounts if u.lower() == user.lower()]
    return hit[0] if hit else None


def cscript(shell, src, args, banner, result):
    """One of reimage's account scripts run by cscript: its effect and its
    output, or None when `src` is neither."""
    if all(p.search(src) for p in GRANT_SCRIPT):
        return grant(shell, args, banner, result)
    if all(p.search(src) for p in REVOKE_SCRIPT):
        return revoke(shell, args, banner, result)
    return None


def grant(shell, args, banner, result):
    """grant-user.vbs USER PASSWORD-FILE 0|1: the file read and deleted
    first; the account made (or its password set and it enabled); in
    Remote Desktop Users; in Administrators with 1, out of it with 0."""
    m = shell.m
    g = groups(m)
    if len(args) != 3:
        return result(banner, b"usage: cscript //nologo grant-user.vbs USER PASSWORD-FILE 0|1\r\n", 2)
    user, path, admin = args[0], args[1], args[2] == "1"
    data = m.read(path)
    if data is None:
        return result(banner, f"cannot read and delete {path}: File not found\r\n".encode(), 1)
    m.remove(path)
    pw = re.split(r"[\r\n]", data.decode("utf-8-sig", "replace"), 1)[0]
    if pw == "":
        return result(banner, b"the password file was empty\r\n", 1)
    name = account(m, user)
    if name is None:
        m.accounts[user] = pw
        m.made_by_grant.append(user)
        name, said = user, f"user {user} created"
    elif name not in m.made_by_grant:
        return result(banner, f"user {user} is an account of the image, not one reimage made: not taken "
                              "over\r\n".encode(), 1)
    else:
        m.accounts[name] = pw
        said = f"user {user} there, new password"
    if name in m.disabled_accounts:
        m.disabled_accounts.remove(name)
    for sid, want in ((RDP_USERS, True), (ADMINS, admin)):
        members = g[sid]["members"]
        if want and name not in members:
            members.append(name)
        if not want and name in members:
            members.remove(name)
    said += ", administrator" if admin else ", no administrator"
    return result(banner + f"{said}, in Remote Desktop Users\r\n".encode())


def revoke(shell, args, banner, result):
    """revoke-user.vbs USER: disabled, every session (WinRM shell) of it
    logged off, deleted, out of every group; no account: nothing to do."""
    m = shell.m
    g = groups(m)
    if len(args) != 1:
        return result(banner, b"usage: cscript //nologo revoke-user.vbs USER\r\n", 2)
    user = args[0]
    name = account(m, user)
    if name is None:
        return result(banner + f"no user {user}: nothing to remove\r\n".encode())
    if name not in m.made_by_grant:
        return result(banner, f"user {user} is not one reimage made: left alone\r\n".encode(), 1)
    m.made_by_grant.remove(name)
    sessions = [sid for sid, (u, _) in m.shell_logons.items() if u.lower() == name.lower()]
    for sid in sessions:
        m.shell_logons.pop(sid, None)
        m.shells.pop(sid, None)
    m.logoffs.append({"user": name, "sessions": len(sessions)})
    del m.accounts[name]
    for grp in g.values():
        if name in grp["members"]:
            grp["members"].remove(name)
    return result(banner + f"user {user} logged off ({len(sessions)} sessions) and removed\r\n".encode())
