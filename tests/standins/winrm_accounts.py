r"""Local accounts and groups of the WinRM stand-in (winrm_standin.py), for
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
- user profiles: the ProfileList key HKLM\SOFTWARE\Microsoft\Windows NT\
  CurrentVersion\ProfileList\SID with ProfileImagePath (VCL's Windows.pm
  reads the default profile's path there; its delete_user removes
  C:\Documents and Settings\USER); WMI's "Win32_UserProfile class"
  (Microsoft: minimum supported client Windows Vista, Server 2008; the
  instance's Delete removes the folder and the key), absent on XP/2003,
  where a query of it fails "Invalid class". An account's first logon
  makes its profile
  folder, C:\Users\NAME (XP/2003: C:\Documents and Settings\NAME), or
  NAME.COMPUTERNAME when a folder of that name is left from an earlier
  account (what a revoke that leaves profiles costs the next user of the
  name); the profile stays when the account is deleted, by SID, until it
  is removed. Accounts get SIDs S-1-5-21-STANDIN-RID (Win32_UserAccount's
  SID), RIDs from 1000 in creation order, never reused (the built-in
  Administrator's is 500).

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


def norm(path):
    """An absolute Windows path as the stand-in keys its files and folders
    (winrm_standin.norm, for absolute paths)."""
    return path.strip().strip('"').replace("/", "\\").rstrip("\\").lower()

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
    re.compile(r"(?i)FROM\s+Win32_UserAccount\s+WHERE\s+LocalAccount\s*=\s*TRUE\s+AND\s+Name\s*="),
    re.compile(r"(?i)FROM\s+Win32_UserProfile\s+WHERE\s+SID\s*="),
    re.compile(r"(?i)\.Delete_\b"),
    re.compile(r"(?i)CurrentVersion\\ProfileList\\"),
    re.compile(r"(?i)\.DeleteFolder\b"),
    re.compile(r"(?i)\.RegDelete\b"),
]
DOMAIN_SID = "S-1-5-21-1004336348-1177238915-682003330"
PROFILE_LIST = r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\ProfileList"

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
        m.sids = {"Administrator": DOMAIN_SID + "-500"}  # account -> SID
        m.next_rid = 1000
        # SID -> profile folder, as ProfileList keeps them; the built-in
        # Administrator's is the shells' working folder.
        m.profiles = {DOMAIN_SID + "-500": r"C:\Users\Administrator"}
    return m.groups


def sid_of(m, name):
    """The account's SID, given at its creation."""
    groups(m)
    if name not in m.sids:
        m.sids[name] = f"{DOMAIN_SID}-{m.next_rid}"
        m.next_rid += 1
    return m.sids[name]


def logon(m, user):
    """A logon of `user` (a WinRM shell): its profile folder made at its
    first logon, with its ProfileList entry."""
    name = account(m, user)
    if name is None:
        return
    sid = sid_of(m, name)
    if sid in m.profiles:
        return
    xp = m.cfg.no_powershell
    base = r"C:\Documents and Settings" if xp else r"C:\Users"
    path = base + "\\" + name
    if norm(path) in m.dirs:
        path = f"{path}.{m.name}"
    m.mkdirs(norm(path))
    m.write(path + r"\NTUSER.DAT", b"regf")
    image = path.replace("C:", "%SystemDrive%", 1) if xp else path
    m.registry[(PROFILE_LIST + "\\" + sid).lower()] = {"ProfileImagePath": ("REG_EXPAND_SZ", image)}
    m.profiles[sid] = path


def remove_profile(m, sid):
    """The profile of `sid` gone: its folder (every file and folder under
    it) and its ProfileList entry. The folder's path, or None."""
    path = m.profiles.pop(sid, None)
    m.registry.pop((PROFILE_LIST + "\\" + sid).lower(), None)
    if path is None:
        return None
    k = norm(path)
    for f in [f for f in m.files if f == k or f.startswith(k + "\\")]:
        m.files.pop(f, None)
        m.display.pop(f, None)
    m.dirs = {d for d in m.dirs if d != k and not d.startswith(k + "\\")}
    return path


def dump(m):
    """The part of the state file this module keeps."""
    g = groups(m)
    return {"groups": g, "disabled_accounts": m.disabled_accounts, "logoffs": m.logoffs,
            "made_by_grant": m.made_by_grant, "sids": m.sids, "profiles": m.profiles}


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
        m.sids.pop(user, None)  # a new account: a new SID
        sid_of(m, user)
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
    """revoke-user.vbs USER [0|1]: disabled, every session (WinRM shell) of
    it logged off, deleted, out of every group, its profile removed (0:
    through Win32_UserProfile, which XP/2003 has not; 1: through the
    ProfileList key); no account: nothing to do."""
    m = shell.m
    g = groups(m)
    if len(args) not in (1, 2):
        return result(banner, b"usage: cscript //nologo revoke-user.vbs USER [0|1]\r\n", 2)
    user, xp = args[0], args[1:] == ["1"]
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
    said = f"user {user} logged off ({len(sessions)} sessions) and removed"
    sid = sid_of(m, name)
    if not xp and m.cfg.no_powershell:
        return result(banner, f"user {user} removed, but not its profile: Invalid class\r\n".encode(), 1)
    path = remove_profile(m, sid)
    if path is None:
        said += ", no profile"
    elif xp:
        said += f", profile {path} removed"
    else:
        said += ", profile removed"
    return result(banner + f"{said}\r\n".encode())
