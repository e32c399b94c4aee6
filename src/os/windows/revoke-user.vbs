' reimage revoke: the local account named by the first argument goes. It
' is disabled first (IADsUser AccountDisabled), so no new logon starts;
' then each of its sessions is logged off (query session USER, logoff ID:
' VCL's Windows.pm logoff_users uses qwinsta and logoff), then the account
' is deleted (IADsContainer::Delete), then its profile folder, found by the
' account's SID (read before the delete, from WMI's Win32_UserAccount):
' with a second argument 0 through WMI's Win32_UserProfile (Vista and
' later; its Delete removes the folder and the ProfileList entry), with 1
' as on XP/2003, which has no Win32_UserProfile: the folder the
' ProfileList key of the SID names (ProfileImagePath) and that key (VCL's
' delete_user removes C:\Documents and Settings\USER). No such account is
' no error: revoke is idempotent. An account reimage did not make (its
' Description) is left alone.
Option Explicit
Dim user, xp, account, shell, ex, line, words, i, n, sid, wmi, u, said
If WScript.Arguments.Count < 1 Or WScript.Arguments.Count > 2 Then
  WScript.StdErr.WriteLine "usage: cscript //nologo revoke-user.vbs USER [0|1]"
  WScript.Quit 2
End If
user = WScript.Arguments(0)
xp = False
If WScript.Arguments.Count = 2 Then xp = (WScript.Arguments(1) = "1")
On Error Resume Next
Set account = GetObject("WinNT://./" & user & ",user")
If Err.Number <> 0 Then
  WScript.Echo "no user " & user & ": nothing to remove"
  WScript.Quit 0
End If
If account.Description <> "reimage: a reservation's user" Then
  WScript.StdErr.WriteLine "user " & user & " is not one reimage made: left alone"
  WScript.Quit 1
End If
account.AccountDisabled = True
account.SetInfo
Set shell = CreateObject("WScript.Shell")
Set ex = shell.Exec("query session " & user)
n = 0
Do While Not ex.StdOut.AtEndOfStream
  line = Trim(Replace(Replace(ex.StdOut.ReadLine(), ">", " "), vbTab, " "))
  Do While InStr(line, "  ") > 0
    line = Replace(line, "  ", " ")
  Loop
  words = Split(line)
  For i = 0 To UBound(words) - 1
    If LCase(words(i)) = LCase(user) And IsNumeric(words(i + 1)) Then
      shell.Run "logoff " & words(i + 1), 0, True
      n = n + 1
    End If
  Next
Loop
Err.Clear
Set wmi = GetObject("winmgmts:\\.\root\cimv2")
For Each u In wmi.ExecQuery("SELECT SID FROM Win32_UserAccount WHERE LocalAccount = TRUE AND Name = '" & user & "'")
  sid = u.SID
Next
Err.Clear
GetObject("WinNT://.,computer").Delete "user", user
If Err.Number <> 0 Then
  WScript.StdErr.WriteLine "cannot delete " & user & ": " & Err.Description
  WScript.Quit 1
End If
said = "user " & user & " logged off (" & n & " sessions) and removed"
If Len(sid) = 0 Then
  WScript.StdErr.WriteLine said & ", but its SID was not found: its profile folder is left"
  WScript.Quit 1
End If
If xp Then
  said = said & RemoveProfileXP(sid)
Else
  said = said & RemoveProfile(sid)
End If
WScript.Echo said

' Vista and later: the profile of sid through Win32_UserProfile.Delete.
Function RemoveProfile(sid)
  Dim p, k
  k = 0
  For Each p In wmi.ExecQuery("SELECT * FROM Win32_UserProfile WHERE SID = '" & sid & "'")
    p.Delete_
    k = k + 1
  Next
  If Err.Number <> 0 Then
    WScript.StdErr.WriteLine "user " & user & " removed, but not its profile: " & Err.Description
    WScript.Quit 1
  End If
  If k = 0 Then RemoveProfile = ", no profile" Else RemoveProfile = ", profile removed"
End Function

' XP/2003: the folder the ProfileList entry of sid names, then the entry.
Function RemoveProfileXP(sid)
  Dim key, path, fso
  key = "HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\ProfileList\" & sid & "\"
  path = shell.RegRead(key & "ProfileImagePath")
  If Err.Number <> 0 Then
    Err.Clear
    RemoveProfileXP = ", no profile"
    Exit Function
  End If
  path = shell.ExpandEnvironmentStrings(path)
  Set fso = CreateObject("Scripting.FileSystemObject")
  If fso.FolderExists(path) Then fso.DeleteFolder path, True
  shell.RegDelete key
  If Err.Number <> 0 Then
    WScript.StdErr.WriteLine "user " & user & " removed, but not its profile " & path & ": " & Err.Description
    WScript.Quit 1
  End If
  RemoveProfileXP = ", profile " & path & " removed"
End Function
